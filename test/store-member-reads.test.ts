/**
 * Member bodies of a plain tar are read by offset (store/sources/tar.ts, MemberReader): small
 * ones through windows of the archive (in its order, or near it), large ones and those of an
 * archive whose windows stop paying one member at a time. Whatever the order,
 * the layer is the one a directory import of the same tree gives, and its bodies are the
 * tree's: 600 files from empty to 1.5 MiB (many smaller than the window, some across its
 * edges, some larger than it), archived by GNU tar sorted by name, in reverse, and shuffled.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missing, skipSuite } from './helpers/probe.js';
import { noise, seeded } from './helpers/random.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strataJson } from './helpers/cli.js';
import { blobPath } from './store-harness.js';

const why = missing({ tools: ['tar', 'diff'] });
if (why) skipSuite('store import: member reads', why);
else {
  const test = suite('store import: member reads');

  test('sorted, reversed and shuffled archives of one tree give the directory import’s layer', () => {
    const dir = tempDir('strata-members-');
    try {
      const tree = join(dir, 'tree');
      const r = seeded(42);
      const names: string[] = ['.'];
      for (let d = 0; d < 6; d++) {
        const sub = `d${d}`;
        mkdirSync(join(tree, sub), { recursive: true });
        names.push(sub);
        for (let f = 0; f < 100; f++) {
          const x = r();
          const size = x < 0.7 ? Math.floor(r() * 8192) : x < 0.95 ? Math.floor(r() * 300_000) : 400_000 + Math.floor(r() * 1_200_000);
          const name = `${sub}/f${String(f).padStart(3, '0')}`;
          writeFileSync(join(tree, name), noise(size, d * 1000 + f));
          utimesSync(join(tree, name), 1_600_000_000, 1_600_000_000);
          names.push(name);
        }
        utimesSync(join(tree, sub), 1_600_000_000, 1_600_000_000);
      }
      utimesSync(tree, 1_600_000_000, 1_600_000_000);
      const store = join(dir, 'store');
      const fromDir = strataJson(['store', 'import', 'm/dir', tree], { store });

      const shuffled = [...names];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const orders: Record<string, string[]> = { sorted: [...names].sort(), reversed: [...names].sort().reverse(), shuffled };
      for (const [order, list] of Object.entries(orders)) {
        const listFile = join(dir, `${order}.list`);
        writeFileSync(listFile, list.join('\n') + '\n');
        const archive = join(dir, `${order}.tar`);
        mustRun('tar', ['-C', tree, '--numeric-owner', '--no-recursion', '-cf', archive, '-T', listFile]);
        const got = strataJson(['store', 'import', `m/${order}`, archive], { store });
        assert.is(got.layer, fromDir.layer, `${order}: the directory import's layer`);
      }
      // And that layer's bodies are the tree's, as GNU tar extracts them.
      const out = join(dir, 'out');
      mkdirSync(out);
      mustRun('tar', ['-C', out, '-xf', blobPath(store, fromDir.layer as string)]);
      mustRun('diff', ['-r', tree, out]);
    } finally {
      removeDir(dir);
    }
  });

  test.run();
}

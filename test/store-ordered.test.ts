/**
 * A tar already in canonical order is imported in one pass: the canonical tar is written as
 * the archive is read (store/layer/builder.ts, addFrom). A pass that finds the archive out of
 * order after all (a path twice, a hard link to a later path, or to a file it no longer keeps)
 * is given up and the import runs again from the sorter. Either way the layer must be the one
 * the sorter gives, and a refusal the sorter's, with the store as it was.
 *
 * Each archive is written twice: in canonical order, and with one unrelated member moved to
 * the end, which the builder must sort.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostileDuplicate, hostileTruncated, writeTar, type TarMember } from './fixtures/hostile.js';
import { missing, skipSuite } from './helpers/probe.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobListing, readJsonBlob } from './store-harness.js';

/** More files than a pass keeps for the hard links that follow them (FILE_RING, 4096). */
const BETWEEN = 5000;

/** The members as given, and with the first member named `moved` put last (out of order). */
function twoOrders(dir: string, name: string, members: TarMember[], moved: string): { ordered: string; unordered: string } {
  const i = members.findIndex((m) => m.name === moved);
  assert.ok(i >= 0, `${name}: ${moved} is a member`);
  const unordered = [...members.slice(0, i), ...members.slice(i + 1), members[i]!];
  return { ordered: writeTar(join(dir, `${name}-ordered.tar`), members), unordered: writeTar(join(dir, `${name}-unordered.tar`), unordered) };
}

const why = missing({ tools: ['python3'] });
if (why) skipSuite('store import: archives in canonical order', why);
else {
  const test = suite('store import: archives in canonical order');

  test('hard links near and far, links to links, xattrs: the one-pass layer is the sorted one', () => {
    const dir = tempDir('strata-ordered-');
    try {
      const far: TarMember[] = [];
      for (let i = 0; i < BETWEEN; i++) far.push({ name: `b/f${String(i).padStart(5, '0')}`, data: i % 7 === 0 ? `${i}\n` : '' });
      const members: TarMember[] = [
        { name: 'a', type: 'dir' },
        { name: 'a/orig', data: 'linked from far away\n', mode: 0o751, uid: 7, gid: 8, mtime: 1_500_000_000, pax: { 'SCHILY.xattr.user.k': 'v' } },
        { name: 'b', type: 'dir' },
        ...far,
        { name: 'c', type: 'dir' },
        { name: 'c/base', data: 'linked from nearby\n' },
        { name: 'c/far', type: 'hardlink', linkname: 'a/orig' },
        { name: 'c/near', type: 'hardlink', linkname: 'c/base' },
        { name: 'c/next', type: 'hardlink', linkname: 'c/near' },
      ];
      const near = members.filter((m) => m.name !== 'c/far');
      const store = join(dir, 'store');
      for (const [name, list] of Object.entries({ far: members, near })) {
        const { ordered, unordered } = twoOrders(dir, name, list, 'b/f00003');
        const one = strataJson(['store', 'import', `${name}/ordered`, ordered], { store });
        const sorted = strataJson(['store', 'import', `${name}/unordered`, unordered], { store });
        assert.is(one.layer, sorted.layer, `${name}: the layer`);
        assert.is(one.manifest, sorted.manifest, `${name}: the manifest`);
        assert.is(one.entries, sorted.entries, `${name}: the entry count`);
        assert.is(one.bytes, sorted.bytes, `${name}: the bytes`);
        const manifest = readJsonBlob(store, one.manifest as string);
        assert.equal(Object.keys(manifest.entries), ['a/orig'], `${name}: the xattr is in the manifest`);
      }
    } finally {
      removeDir(dir);
    }
  });

  // One fault each; the members are in canonical order, so the one-pass import meets the
  // fault itself, or finds the archive out of order there and leaves it to the sorter.
  const FAULTS: Record<string, TarMember[]> = {
    'a path twice': [{ name: 'a' }, { name: 'b', data: '1\n' }, { name: 'b', data: '2\n' }, { name: 'c' }],
    'a hard link to a later path': [{ name: 'a' }, { name: 'b', type: 'hardlink', linkname: 'c' }, { name: 'c', data: 'x\n' }],
    'a hard link to a directory': [{ name: 'a' }, { name: 'd', type: 'dir' }, { name: 'e', type: 'hardlink', linkname: 'd' }],
    'a hard link to a path not in the layer': [{ name: 'a' }, { name: 'c', type: 'hardlink', linkname: 'b' }],
    'a hard link to itself': [{ name: 'a' }, { name: 'c', type: 'hardlink', linkname: 'c' }],
    'an entry through a symlink': [{ name: 'a' }, { name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'l/x', data: 'escape\n' }],
    'an entry beneath a file': [{ name: 'a' }, { name: 'f', data: 'file\n' }, { name: 'f/x', data: 'below\n' }],
  };

  test('refusals are the sorter’s, one line, and leave the store as it was', () => {
    const dir = tempDir('strata-ordered-');
    try {
      const store = join(dir, 'store');
      strataJson(['store', 'import', 'keep/1', writeTar(join(dir, 'keep.tar'), [{ name: 'keep', data: 'kept\n' }])], { store });
      const blobs = blobListing(store);
      const list = strataJson(['store', 'ls'], { store });
      for (const [fault, members] of Object.entries(FAULTS)) {
        const name = fault.replace(/ /g, '-');
        const { ordered, unordered } = twoOrders(dir, name, members, 'a');
        const expected = assertOneLineError(strata(['store', 'import', `${name}/2`, unordered], { store }), `${fault}, sorted`);
        const got = assertOneLineError(strata(['store', 'import', `${name}/1`, ordered], { store }), `${fault}, in order`);
        assert.is(got, expected, `${fault}: the same refusal`);
        assert.equal(blobListing(store), blobs, `${fault}: no blob added`);
        assert.equal(strataJson(['store', 'ls'], { store }), list, `${fault}: no module added`);
        assert.equal(readdirSync(join(store, 'tmp')), [], `${fault}: nothing left in tmp/`);
      }
    } finally {
      removeDir(dir);
    }
  });

  test('a damaged layer of a docker archive is named by its place in the image', () => {
    // An image's layer in canonical order is read only when its entries are asked for, after
    // its tar was given to the builder: a refusal then must still say which layer it is.
    const dir = tempDir('strata-ordered-');
    try {
      const store = join(dir, 'store');
      for (const [fault, make] of Object.entries({ truncated: hostileTruncated, duplicate: hostileDuplicate })) {
        const layer = make(join(dir, fault));
        const archive = writeTar(join(dir, `${fault}-image.tar`), [
          { name: 'manifest.json', data: JSON.stringify([{ Config: 'config.json', Layers: ['layer.tar'] }]) },
          { name: 'config.json', data: '{}' },
          { name: 'layer.tar', data: readFileSync(layer) },
        ]);
        assertOneLineError(strata(['store', 'import', `img/${fault}`, `docker-archive:${archive}`], { store }), fault, /^strata: image layer 1: /);
      }
      assert.equal(strataJson(['store', 'ls'], { store }), [], 'no module');
    } finally {
      removeDir(dir);
    }
  });

  test.run();
}


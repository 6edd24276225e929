/**
 * store/layer/builder.ts, an ordered source (addFrom): its one pass keeps the latest 4,096
 * files and 4,096 hard links (FILE_RING) for the links that follow them. A link to one of
 * those, or to a link among them, is joined in that pass; a link to a file further back gives
 * the pass up, and the sorter builds the layer from a second reading of the source. Either
 * way the canonical tar is the same.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerBuilder, type SourceItem } from '../store/layer/builder.js';
import type { LayerEntry } from '../store/types.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('layer builder: an ordered source and its hard links');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-builder-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const FILES = 5000;
const RING = 4096;
const file = (i: number) => `f/${String(i).padStart(5, '0')}`;

/** f/ with FILES empty files, then g/ with a link to `target` and a link to that link. */
function entries(target: string): LayerEntry[] {
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0 };
  const out: LayerEntry[] = [{ path: 'f', type: 'dir', ...meta, mode: 0o755 }];
  for (let i = 0; i < FILES; i++) out.push({ path: file(i), type: 'file', ...meta });
  out.push({ path: 'g', type: 'dir', ...meta, mode: 0o755 });
  out.push({ path: 'g/link', type: 'hardlink', ...meta, linkname: target });
  out.push({ path: 'g/link2', type: 'hardlink', ...meta, linkname: 'g/link' });
  return out;
}

/** The canonical tar of `list` given as an ordered source, and how many times the source was read. */
async function build(dir: string, list: LayerEntry[]): Promise<{ tar: Buffer; passes: number }> {
  const b = new LayerBuilder({ tmpDir: dir });
  let passes = 0;
  try {
    b.addFrom(async function* (): AsyncGenerator<SourceItem> {
      passes++;
      // Fresh entries each pass: the builder makes what it is given canonical in place.
      for (const e of list) yield { entry: { ...e } };
    });
    const chunks = await b.written(async (built) => {
      const out: Buffer[] = [];
      for await (const c of built.tar()) out.push(Buffer.from(c));
      return out;
    });
    return { tar: Buffer.concat(chunks), passes };
  } finally {
    b.dispose();
  }
}

test('a link to any of the latest 4,096 files, and a link to that link, are joined in one pass', async ({ dir }) => {
  for (const i of [FILES - 1, FILES - RING / 2, FILES - RING]) {
    const { passes } = await build(dir, entries(file(i)));
    assert.is(passes, 1, `a link to ${file(i)}, ${FILES - i} files back`);
  }
});

test('a link to a file further back is joined by the sorter, into the same tar as the sorted entries give', async ({ dir }) => {
  const list = entries(file(FILES - RING - 1));
  const far = await build(dir, list);
  assert.is(far.passes, 2, 'the pass was given up and the source read again');
  // The same entries added one by one (the sorter's way from the start).
  const b = new LayerBuilder({ tmpDir: dir });
  try {
    for (const e of list) b.add({ ...e });
    const out: Buffer[] = [];
    for await (const c of b.build().tar()) out.push(Buffer.from(c));
    assert.ok(Buffer.concat(out).equals(far.tar), 'the same canonical tar');
  } finally {
    b.dispose();
  }
  // The link's group: the file leads it, both links point at the file.
  const text = far.tar.toString('latin1');
  for (const link of ['g/link', 'g/link2']) {
    const at = text.indexOf(`${link}\0`);
    assert.ok(at >= 0 && text.startsWith(`${file(FILES - RING - 1)}\0`, at + 157), `${link} names the file`);
  }
});

test.run();

/**
 * Holes cost their stored pieces, not their size (spec/squashfs.md, spec/erofs.md, Reader):
 * images (SquashFS and EROFS, written with strata's writers) holding an 8 GiB file of holes
 * only, and a file of data, a 4 GiB hole and data again, are extracted by `strata unsquash`
 * sparse (the files take almost no disk blocks) with their data where it belongs, and an image
 * whose only file is all holes is a valid image, not a damaged one. Peak memory of the
 * extraction stays far below the size of the holes (/usr/bin/time).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErofsWriter, SquashfsWriter } from '../compose/image/index.js';
import type { LayerEntry } from '../store/index.js';
import { strata } from './helpers/cli.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const GiB = 1024 ** 3;
const BLOCK = 1 << 20;
const ZERO = Buffer.alloc(BLOCK);
const HEAD = Buffer.from('head of the file\n');
const TAIL = Buffer.from('tail of the file\n');

const entry = (path: string, type: LayerEntry['type'], size = 0): LayerEntry => ({ path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 0, size });

/** `size` bytes: `head` first, zeros, `tail` last; zero blocks are handed over as one shared buffer. */
async function* sparse(size: number, head?: Buffer, tail?: Buffer): AsyncGenerator<Buffer> {
  let done = 0;
  if (head) {
    yield head;
    done += head.length;
  }
  const end = size - (tail?.length ?? 0);
  while (done < end) {
    const n = Math.min(BLOCK - (done % BLOCK), end - done);
    yield ZERO.subarray(0, n);
    done += n;
  }
  if (tail) yield tail;
}

async function writeImage(format: 'squashfs' | 'erofs', out: string, withData: boolean): Promise<void> {
  const w =
    format === 'squashfs'
      ? await SquashfsWriter.create(out, { compressor: 'zstd', blockSize: BLOCK, mkfsTime: 0 })
      : await ErofsWriter.create(out, { compressor: 'lz4' });
  w.addEntry(entry('.', 'dir'));
  await w.addFile(entry('holes', 'file', 8 * GiB), sparse(8 * GiB), 't', {});
  if (withData) {
    const size = 4 * GiB + 2 * BLOCK;
    await w.addFile(entry('mixed', 'file', size), sparse(size, HEAD, TAIL), 't', {});
  }
  await w.finish();
}

function readAt(file: string, pos: number, n: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, pos);
    return b;
  } finally {
    closeSync(fd);
  }
}

const test = suite<{ dir: string }>('holes in images');
test.before((ctx) => {
  ctx.dir = tempDir('strata-holes-');
});
test.after((ctx) => removeDir(ctx.dir));

for (const format of ['squashfs', 'erofs'] as const) {
  test(`${format}: unsquash keeps holes sparse and data in place; an image of holes only is valid`, async ({ dir }) => {
    const img = join(dir, `h.${format}`);
    await writeImage(format, img, true);
    // SquashFS stores a hole as a zero size word per block; compressed EROFS has an 8-byte index
    // entry per 4 KiB lcluster (3 M of them here): small either way against 12 GiB of content.
    assert.ok(statSync(img).size < (12 * GiB) / 256, `the image is small (${statSync(img).size} bytes)`);
    const out = join(dir, `out-${format}`);
    const r = strata(['unsquash', img, out], { prefix: ['/usr/bin/time', '-f', '%M'], timeout: 300_000 });
    assert.is(r.code, 0, r.stderr.toString());
    const rssKiB = Number(r.stderr.toString().trim().split('\n').pop());
    assert.ok(rssKiB < 400 * 1024, `peak RSS ${rssKiB} KiB, far below the holes' size`);
    for (const [name, size] of [['holes', 8 * GiB], ['mixed', 4 * GiB + 2 * BLOCK]] as const) {
      const st = statSync(join(out, name));
      assert.is(st.size, size, `${name}: size`);
      // The blocks holding the head and the tail are written whole; nothing else is allocated.
      assert.ok(st.blocks * 512 <= 2 * BLOCK + (1 << 16), `${name}: sparse on disk (${st.blocks * 512} bytes allocated)`);
    }
    const mixed = join(out, 'mixed');
    assert.equal(readAt(mixed, 0, HEAD.length), HEAD, 'the head is in place');
    assert.equal(readAt(mixed, statSync(mixed).size - TAIL.length, TAIL.length), TAIL, 'the tail is in place');
    assert.equal(readAt(mixed, 2 * GiB, 16), Buffer.alloc(16), 'zeros in the hole');

    const only = join(dir, `only.${format}`);
    await writeImage(format, only, false);
    const o = strata(['unsquash', only, join(dir, `only-${format}`)]);
    assert.is(o.code, 0, `an image whose only file is all holes is valid: ${o.stderr}`);
    assert.is(statSync(join(dir, `only-${format}`, 'holes')).size, 8 * GiB);
  });
}

test.run();

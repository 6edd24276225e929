/**
 * strata's EROFS reader on damaged images: truncated at every structure boundary, bytes
 * flipped at seeded random places (metadata and data), and targeted damage (a directory
 * cycle, a nid past the end, a huge size, an unknown feature). Every outcome must be a clean
 * read or one StrataError line (ERR_IMAGE_CORRUPT, or ERR_IMAGE_UNSUPPORTED for a feature
 * bit): never another error type, a hang, or an unbounded allocation. No root needed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isStrataError } from '../native/errors.js';
import { IMAGE_ERR } from '../compose/image/errors.js';
import { ErofsImage } from '../compose/image/erofs/reader.js';
import { BLOCK_SIZE, SUPER_OFFSET } from '../compose/image/erofs/format.js';
import { assertNotACrash } from './helpers/cli.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { seeded } from './helpers/random.js';
import { buildErofs, corpus, type Item } from './erofs-harness.js';

const Corrupt = suite('erofs reader on damaged images');
let tmp = '';

Corrupt.before.each(() => {
  tmp = tempDir('strata-erofs-bad-');
});
Corrupt.after.each(() => removeDir(tmp));

/** A smaller corpus (no 3,000-entry directory, no copies) so hundreds of damaged copies read quickly. */
function smallCorpus(): Item[] {
  return corpus().filter((i) => !/^(big|ids|dups)\//.test(i.entry.path));
}

/** Reads everything: walk, every file's extents (data bytes bounded), stat and readFile. */
async function readAll(path: string): Promise<void> {
  const img = await ErofsImage.open(path);
  try {
    let budget = 64 << 20;
    for await (const e of img.walk()) {
      if (e.type !== 'file') continue;
      for await (const x of img.contentPieces(e)) {
        if (x.data) budget -= x.data.length;
        if (budget < 0) throw new Error('read more data than the image could hold');
      }
    }
    await img.stat('lic/LICENSE');
    await img.readFile('sizes/one').catch((e: unknown) => {
      if (!isStrataError(e) || e.code !== IMAGE_ERR.NOT_FOUND) throw e;
    });
  } finally {
    await img.close();
  }
}

/** Runs readAll with a time limit; returns 'ok' or the error's code, failing on anything else. */
async function outcome(path: string, what: string): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in 20 s (a hang?)`)), 20_000);
  });
  try {
    await Promise.race([readAll(path), limit]);
    return 'ok';
  } catch (e) {
    if (!isStrataError(e)) throw new Error(`${what}: not a StrataError: ${e instanceof Error ? e.stack : String(e)}`);
    assert.ok([IMAGE_ERR.CORRUPT, IMAGE_ERR.UNSUPPORTED, IMAGE_ERR.NOT_FOUND].includes(e.code as never), `${what}: code ${e.code}`);
    assert.not.match(e.message, /\n/, `${what}: one line`);
    assertNotACrash(e.message, what);
    return e.code;
  } finally {
    clearTimeout(timer);
  }
}

for (const comp of ['none', 'lz4', 'zstd'] as const) {
  Corrupt(`${comp}: truncated at every block and structure boundary`, async () => {
    const good = join(tmp, 'good.erofs');
    await buildErofs(smallCorpus(), good, { compressor: comp, workers: 1 });
    assert.is(await outcome(good, 'intact'), 'ok');
    const bytes = readFileSync(good);
    const cuts = new Set<number>([0, 1, 4, SUPER_OFFSET, SUPER_OFFSET + 4, SUPER_OFFSET + 64, SUPER_OFFSET + 127, SUPER_OFFSET + 128, BLOCK_SIZE, bytes.length - 1]);
    for (let b = BLOCK_SIZE; b < bytes.length; b += BLOCK_SIZE) cuts.add(b).add(b + 100);
    const codes = new Map<string, number>();
    for (const cut of [...cuts].filter((c) => c < bytes.length).sort((a, b) => a - b)) {
      const p = join(tmp, 'cut.erofs');
      writeFileSync(p, bytes.subarray(0, cut));
      const c = await outcome(p, `cut at ${cut}`);
      codes.set(c, (codes.get(c) ?? 0) + 1);
      assert.is.not(c, 'ok', `cut at ${cut} of ${bytes.length} read cleanly`);
      // The same cut with the superblock's block count made to match: the reader gets past
      // open() and meets the missing bytes wherever they were needed.
      if (cut >= SUPER_OFFSET + 128) {
        const fixed = Buffer.from(bytes.subarray(0, cut));
        fixed.writeUInt32LE(Math.floor(cut / BLOCK_SIZE), SUPER_OFFSET + 36);
        writeFileSync(p, fixed);
        const c2 = await outcome(p, `cut at ${cut}, block count adjusted`);
        codes.set(`adjusted ${c2}`, (codes.get(`adjusted ${c2}`) ?? 0) + 1);
      }
    }
    assert.ok((codes.get(IMAGE_ERR.CORRUPT) ?? 0) > 0);
    assert.ok((codes.get(`adjusted ${IMAGE_ERR.CORRUPT}`) ?? 0) > 3, JSON.stringify([...codes]));
  });

  Corrupt(`${comp}: 250 images with bytes flipped at random give a clean read or one line`, async () => {
    const good = join(tmp, 'good.erofs');
    await buildErofs(smallCorpus(), good, { compressor: comp, workers: 1 });
    const bytes = readFileSync(good);
    const meta = bytes.readUInt32LE(SUPER_OFFSET + 40) * BLOCK_SIZE;
    const rnd = seeded(comp.length * 7919);
    const codes = new Map<string, number>();
    for (let i = 0; i < 250; i++) {
      const bad = Buffer.from(bytes);
      const n = 1 + Math.floor(rnd() * 8);
      const where: number[] = [];
      for (let k = 0; k < n; k++) {
        // Mostly the metadata area and the superblock, where a flip changes structure.
        const r = rnd();
        const at = r < 0.7 ? meta + Math.floor(rnd() * (bytes.length - meta)) : r < 0.85 ? SUPER_OFFSET + Math.floor(rnd() * 128) : Math.floor(rnd() * bytes.length);
        bad[at] = rnd() < 0.5 ? bad[at]! ^ (1 << Math.floor(rnd() * 8)) : Math.floor(rnd() * 256);
        where.push(at);
      }
      const p = join(tmp, 'flip.erofs');
      writeFileSync(p, bad);
      const c = await outcome(p, `flips at ${where.join(',')}`);
      codes.set(c, (codes.get(c) ?? 0) + 1);
    }
    assert.ok((codes.get(IMAGE_ERR.CORRUPT) ?? 0) > 20, JSON.stringify([...codes]));
  });
}

Corrupt('targeted damage: a directory cycle, a nid past the end, a huge size, an unknown feature, no magic', async () => {
  const items: Item[] = [
    { entry: { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 5, size: 0 } },
    { entry: { path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 5, size: 0 } },
    { entry: { path: 'd/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 5, size: 6 }, data: Buffer.from('hello\n') },
  ];
  const good = join(tmp, 'good.erofs');
  await buildErofs(items, good, { compressor: 'none' });
  const bytes = readFileSync(good);
  const meta = bytes.readUInt32LE(SUPER_OFFSET + 40) * BLOCK_SIZE;
  // Root inode (nid 0, compact, inline dirents after it): entries ".", "..", "d".
  const rootDirents = meta + 32;
  const findDirent = (name: string): number => {
    const n = bytes.readUInt16LE(rootDirents + 8) / 12;
    for (let i = 0; i < n; i++) {
      const off = bytes.readUInt16LE(rootDirents + i * 12 + 8);
      const end = i + 1 < n ? bytes.readUInt16LE(rootDirents + (i + 1) * 12 + 8) : off + name.length;
      if (bytes.subarray(rootDirents + off, rootDirents + end).toString() === name) return rootDirents + i * 12;
    }
    throw new Error(`no dirent ${name}`);
  };
  const cases: { name: string; edit: (b: Buffer) => void; code: string; message: RegExp }[] = [
    { name: 'cycle', edit: (b) => b.writeBigUInt64LE(0n, findDirent('d')), code: IMAGE_ERR.CORRUPT, message: /says type|cycle|appears twice/ },
    { name: 'nid past the end', edit: (b) => b.writeBigUInt64LE(1n << 40n, findDirent('d')), code: IMAGE_ERR.CORRUPT, message: /past the end/ },
    { name: 'huge directory size', edit: (b) => b.writeUInt32LE(0xfffffff0, meta + 8), code: IMAGE_ERR.CORRUPT, message: /past the end|corrupt/ },
    { name: 'unknown feature', edit: (b) => b.writeUInt32LE(0x80, SUPER_OFFSET + 80), code: IMAGE_ERR.UNSUPPORTED, message: /feature/ },
    { name: 'long xattr prefixes', edit: (b) => b.writeUInt32LE(0x40, SUPER_OFFSET + 80), code: IMAGE_ERR.UNSUPPORTED, message: /long xattr prefixes/ },
    { name: 'no magic', edit: (b) => b.writeUInt32LE(0, SUPER_OFFSET), code: IMAGE_ERR.CORRUPT, message: /is not an EROFS image/ },
    { name: 'block size', edit: (b) => (b[SUPER_OFFSET + 12] = 30), code: IMAGE_ERR.CORRUPT, message: /block size bits/ },
  ];
  for (const c of cases) {
    const bad = Buffer.from(bytes);
    c.edit(bad);
    const p = join(tmp, `${c.name.replace(/ /g, '-')}.erofs`);
    writeFileSync(p, bad);
    let err: unknown;
    try {
      await readAll(p);
    } catch (e) {
      err = e;
    }
    assert.ok(isStrataError(err), `${c.name}: ${String(err)}`);
    if (!isStrataError(err)) continue;
    assert.is(err.code, c.code, `${c.name}: ${err.message}`);
    assert.match(err.message, c.message, c.name);
    assert.ok(err.message.startsWith(p), `${c.name}: names the image`);
  }
});

Corrupt.run();

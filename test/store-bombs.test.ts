/**
 * Issue 11, "bounded work on hostile input", for ingest: each bomb either imports within a
 * fixed memory bound or is refused with one line, and never hangs (every CLI run has a
 * timeout; a hang fails the test).
 *
 * - a .tar.zst whose one frame expands 512 MiB of zeros (the old decoder buffered a whole
 *   input chunk's output: GBs from 100 KB);
 * - a .tar.gz with a global pax header of 300,000 records before 20,000 entries (each entry
 *   used to copy every global record), and one whose global xattr would be copied onto
 *   every entry without bound;
 * - OCI layouts whose layer blob is a FIFO, /dev/zero (device node, or a symlink to it), a
 *   file longer or shorter than its descriptor says; a FIFO or device given as a plain tar;
 * - a layer listed 100 times (docker archive and OCI layout): read, copied and made
 *   canonical once (bytes written stay near one copy);
 * - indexes nested in indexes: followed (same layer as the plain layout), or refused past
 *   the depth bound; a document that is neither index nor manifest refused.
 *
 * Memory and bytes written are the child's own (GNU time: maxrss, block outputs).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, symlinkSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeHeader, END_OF_ARCHIVE } from '../store/tar/writer.js';
import { writeTar } from './fixtures/hostile.js';
import { dockerArchive, gz, MT, OciLayout } from './fixtures/oci.js';
import { noise } from './helpers/random.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, tempDir, type RunResult } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';

interface Ctx {
  dir: string;
  store: string;
}

const TIME = '/usr/bin/time';
const MiB = 1024 * 1024;

/** The CLI under GNU time: the result with time's line taken out, peak RSS and bytes written. */
function measured(store: string, args: string[]): { r: RunResult; rss: number; written: number } {
  const r = strata(args, { store, prefix: [TIME, '-f', '@usage %M %O'] });
  const lines = r.stderr.split('\n');
  const i = lines.findIndex((l) => l.startsWith('@usage '));
  assert.ok(i >= 0, `no usage line from time: ${r.stderr}`);
  const [, rss, out] = lines[i]!.split(' ');
  lines.splice(i, 1);
  // time prints "Command exited with non-zero status N" before its own line.
  const stderr = lines.filter((l) => !l.startsWith('Command exited with non-zero status')).join('\n');
  return { r: { ...r, stderr }, rss: Number(rss) * 1024, written: Number(out) * 512 };
}

/** A plain tar of empty files f0..f(n-1) after a global pax header holding `records`. */
function globalPaxTar(records: Array<[string, Buffer]>, n: number): Buffer {
  const h = Buffer.from(encodeHeader({ path: 'g', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: records }));
  const pax = h.subarray(0, h.length - 512); // the pax block and its records; the ustar block is dropped
  pax[156] = 0x67; // 'x' → 'g'
  pax.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += pax[i]!;
  pax.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const parts: Buffer[] = [pax];
  for (let i = 0; i < n; i++) parts.push(encodeHeader({ path: `f${i}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_000, size: 0 }));
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** A gzip'd layer tar with one file of `size` pseudo-random bytes. */
function randomLayer(dir: string, name: string, size: number, seed: number): Buffer {
  const t = writeTar(join(dir, `${name}.tar`), [{ name: 'data', type: 'dir' }, { name: 'data/blob', data: noise(size, seed) }]);
  return mustRun('cat', [t]).stdout;
}

const why = missing({ tools: ['zstd', 'tar'], check: () => (existsSync(TIME) ? undefined : `${TIME} (GNU time) not installed`) });
if (why) skipSuite('store import: bombs', why);
else {
  const test = suite<Ctx>('store import: bombs are bounded');
  test.before.each((ctx) => {
    ctx.dir = tempDir('strata-bombs-');
    ctx.store = join(ctx.dir, 'store');
  });
  test.after.each((ctx) => removeDir(ctx.dir));

  test('a zstd frame of 512 MiB of zeros imports in bounded memory', ({ dir, store }) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    mustRun('truncate', ['-s', '512M', join(src, 'zeros')]);
    const bomb = join(dir, 'bomb.tar.zst');
    mustRun('sh', ['-c', 'tar -C "$1" --owner=0 --group=0 --numeric-owner -cf - zeros | zstd -1 -q -c > "$2"', 'sh', src, bomb]);
    rmSync(src, { recursive: true });
    const m = measured(store, ['--json', 'store', 'import', 'bomb/zstd', bomb]);
    assert.is(m.r.code, 0, m.r.stderr);
    const r = JSON.parse(m.r.stdout.toString());
    assert.is(r.bytes, 512 * MiB);
    assert.ok(m.rss < 300 * MiB, `peak RSS ${Math.round(m.rss / MiB)} MiB for a 512 MiB frame`);
    assert.equal(mustRun('ls', [join(store, 'tmp')]).stdout.toString(), '', 'the spool is gone');
  });

  test('a global pax header of 300,000 records before 20,000 entries: applied once', ({ dir, store }) => {
    const records: Array<[string, Buffer]> = [];
    for (let i = 0; i < 300_000; i++) records.push([`k${String(i).padStart(6, '0')}`, Buffer.from('v')]);
    const tgz = join(dir, 'global.tar.gz');
    writeFileSync(tgz, gzipSync(globalPaxTar(records, 20_000), { level: 1 }));
    const m = measured(store, ['--json', 'store', 'import', 'bomb/global', tgz]);
    assert.is(m.r.code, 0, m.r.stderr);
    assert.is(JSON.parse(m.r.stdout.toString()).entries, 20_000);
    assert.ok(m.rss < 400 * MiB, `peak RSS ${Math.round(m.rss / MiB)} MiB`);
  });

  test('a global xattr spread over every later entry without bound is refused with one line', ({ dir, store }) => {
    const tgz = join(dir, 'spread.tar.gz');
    writeFileSync(tgz, gzipSync(globalPaxTar([['SCHILY.xattr.user.big', Buffer.alloc(60_000, 0x61)]], 5_000), { level: 1 }));
    const m = measured(store, ['store', 'import', 'bomb/spread', tgz]);
    assertOneLineError(m.r, 'global xattr spread', /global pax headers give 60\d+ bytes of xattrs.*every entry/);
    assert.ok(m.rss < 400 * MiB, `peak RSS ${Math.round(m.rss / MiB)} MiB`);
  });

  test('blobs that are a FIFO, /dev/zero or the wrong size, and special files as tars: one line each, no hang', ({ dir, store }) => {
    const layer = gz(randomLayer(dir, 'l', 1000, 1));
    const make = (name: string, spoil: (o: OciLayout, d: ReturnType<OciLayout['blob']>) => void) => {
      const o = new OciLayout(join(dir, name));
      const d = o.blob(layer, MT.layerGzip);
      o.top([o.image([d])]);
      spoil(o, d);
      return o.dir;
    };
    const cases: Array<[string, string, RegExp]> = [
      ['fifo', make('fifo', (o, d) => { rmSync(o.path(d)); mustRun('mkfifo', [o.path(d)]); }), /layer 1 .*not a regular file/],
      ['symlink to /dev/zero', make('zero-link', (o, d) => { rmSync(o.path(d)); symlinkSync('/dev/zero', o.path(d)); }), /layer 1 .*symlink/],
      ['longer than declared', make('long', (o, d) => appendFileSync(o.path(d), Buffer.alloc(4096))), /layer 1 .*is \d+ bytes; its descriptor says \d+/],
      ['shorter than declared', make('short', (o, d) => mustRun('truncate', ['-s', '10', o.path(d)])), /layer 1 .*is 10 bytes; its descriptor says \d+/],
    ];
    if (process.getuid?.() === 0) {
      cases.push(['device /dev/zero', make('zero-dev', (o, d) => { rmSync(o.path(d)); mustRun('mknod', [o.path(d), 'c', '1', '5']); }), /layer 1 .*not a regular file/]);
    }
    for (const [what, layout, re] of cases) {
      assertOneLineError(measured(store, ['store', 'import', 'bomb/oci', `oci:${layout}`]).r, what, re);
    }
    const fifo = join(dir, 'pipe.tar');
    mustRun('mkfifo', [fifo]);
    assertOneLineError(measured(store, ['store', 'import', 'bomb/fifo', fifo]).r, 'a FIFO as a tar', /not a regular file/);
    assertOneLineError(measured(store, ['store', 'import', 'bomb/zero', '/dev/zero']).r, '/dev/zero as a tar', /not a regular file/);
    assertOneLineError(measured(store, ['store', 'import', 'bomb/fifo', `docker-archive:${fifo}`]).r, 'a FIFO as a docker archive', /not a regular file/);
    assert.equal(strataJson(['store', 'ls'], { store }), []);
  });

  test('a layer listed 100 times is copied and made canonical once (docker archive and OCI layout)', ({ dir, store }) => {
    const size = 4 * MiB;
    const layer = randomLayer(dir, 'big', size, 2);
    const once = dockerArchive(join(dir, 'once.tar'), [layer]);
    const many = dockerArchive(join(dir, 'many.tar'), [layer], Array(100).fill(0));
    const a = strataJson(['store', 'import', 'd/once', `docker-archive:${once}`], { store });
    const m = measured(store, ['--json', 'store', 'import', 'd/many', `docker-archive:${many}`]);
    assert.is(m.r.code, 0, m.r.stderr);
    assert.is(JSON.parse(m.r.stdout.toString()).layer, a.layer, 'a layer applied again over itself changes nothing');
    assert.ok(m.written < 10 * size, `${Math.round(m.written / MiB)} MiB written for a ${size / MiB} MiB layer listed 100 times`);

    const o = new OciLayout(join(dir, 'oci-many'));
    const d = o.blob(gz(layer), MT.layerGzip);
    o.top([o.image(Array(100).fill(d))]);
    const mo = measured(store, ['--json', 'store', 'import', 'o/many', `oci:${o.dir}`]);
    assert.is(mo.r.code, 0, mo.r.stderr);
    assert.is(JSON.parse(mo.r.stdout.toString()).layer, a.layer);
    assert.ok(mo.written < 10 * size, `${Math.round(mo.written / MiB)} MiB written for a ${size / MiB} MiB layer listed 100 times`);
  });

  test('indexes in indexes are followed to the image, refused past the bound; a non-manifest is refused', ({ dir, store }) => {
    const layer = gz(randomLayer(dir, 'n', 3000, 3));
    const flat = new OciLayout(join(dir, 'flat'));
    flat.top([flat.image([flat.blob(layer, MT.layerGzip)], ['A=1'])]);
    const want = strataJson(['store', 'import', 'n/flat', `oci:${flat.dir}`], { store });

    const nested = (name: string, depth: number) => {
      const o = new OciLayout(join(dir, name));
      let d = o.image([o.blob(layer, MT.layerGzip)], ['A=1']);
      for (let i = 0; i < depth; i++) d = o.indexBlob([d]);
      o.top([d]);
      return o.dir;
    };
    const two = strataJson(['store', 'import', 'n/two', `oci:${nested('two', 2)}`], { store });
    assert.is(two.layer, want.layer, 'an index in an index gives the image it names');
    assert.ok(two.entries > 0);
    assertOneLineError(measured(store, ['store', 'import', 'n/deep', `oci:${nested('deep', 6)}`]).r, 'indexes six deep', /indexes nest more than \d+ deep/);

    const odd = new OciLayout(join(dir, 'odd'));
    odd.top([odd.json({ schemaVersion: 2, hello: 'world' }, MT.manifest)]);
    assertOneLineError(measured(store, ['store', 'import', 'n/odd', `oci:${odd.dir}`]).r, 'neither index nor manifest', /is not an image manifest/);
  });

  test.run();
}

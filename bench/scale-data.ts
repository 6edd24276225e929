/**
 * The generated layer of the scale section: N small files in D directories, as the tar GNU
 * tar writes of them, cached under <data root>/scale/N/ like the rest of the data.
 *
 *   scale/N/scale.tar   GNU tar, pax format, members `./`, `./scale/`, `./scale/dI/`,
 *                       `./scale/dI/fJ` in name order (`tar -C TREE .`, as the other
 *                       layers' tars); owner 0:0, mode 0755/0644, mtime
 *                       2024-01-01T00:00:00Z; no pax extended headers (nothing needs one)
 *   scale/N/stamp.json  written last: {version, n, dirs, perDir, bytes, tarBytes, built}
 *
 * The tar is written directly (writeScaleTar), byte for byte what GNU tar 1.34 writes from
 * the same tree on disk with GNU_TAR_SCALE_OPTIONS: bench/selftest.ts checks exactly that.
 * Writing a million small files to a shared disk and archiving them takes many minutes
 * (file creation there was measured at 1–3 ms a file under load); writing the tar takes
 * seconds.
 *
 * Layout: D = 1000 directories for N ≥ 100,000, else N/100 (at least 1); the N files are
 * spread evenly (1,000,000 → 1,000 × 1,000; 100,000 → 1,000 × 100; 10,000 → 100 × 100).
 * Contents are deterministic: file i is 0–2,047 bytes (1 KiB on average): a header line
 * naming it followed by a slice of a fixed 1 MiB pseudo-text of identifier-like words, so it
 * compresses about as well as source code. Files shorter than their header line hold a
 * prefix of it, so about 1 % are equal to another (empty files included), as `__init__.py`
 * files are in real trees. Nothing depends on the clock or the machine: two machines
 * generate byte-identical tars.
 */
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from './proc.js';

export const SCALE_VERSION = 2;
/** mtime of every generated entry: 2024-01-01T00:00:00Z. */
export const SCALE_MTIME = 1704067200;
const PSEUDO_TEXT_BYTES = 1 << 20;
const MAX_FILE = 2048;

export interface ScaleStamp {
  version: number;
  /** Files in the layer. */
  n: number;
  dirs: number;
  perDir: number;
  /** Bytes in files. */
  bytes: number;
  tarBytes: number;
  built: string;
}

export interface ScaleData {
  n: number;
  tar: string;
  stamp: ScaleStamp;
}

export function layout(n: number): { dirs: number; perDir: number } {
  const dirs = n >= 100_000 ? 1000 : Math.max(1, Math.floor(n / 100));
  return { dirs, perDir: Math.ceil(n / dirs) };
}

/** xorshift32: the one source of "randomness", seeded by a constant. */
function* xorshift(seed: number): Generator<number> {
  let x = seed >>> 0 || 1;
  for (;;) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    yield x;
  }
}

const WORDS = (
  'int char void static const return if else for while struct size_t uint32_t buffer length ' +
  'offset index count value result error status config module layer image block inode entry ' +
  'path name mode owner group data table list node tree hash store cache read write open close ' +
  'init free alloc copy merge sort find next prev first last begin end flags options self import ' +
  'def class from as with try except raise pass None True False print len range'
).split(' ');

function pseudoText(): Buffer {
  const rnd = xorshift(0x5eed);
  const parts: string[] = [];
  let len = 0;
  let col = 0;
  while (len < PSEUDO_TEXT_BYTES + MAX_FILE) {
    const r = rnd.next().value as number;
    let w = WORDS[r % WORDS.length]!;
    if (r & 0x100000) w += r & 0x200000 ? '(' : ' =';
    col += w.length + 1;
    const sep = col > 72 || (r & 0xf000) === 0 ? '\n' : ' ';
    if (sep === '\n') col = 0;
    parts.push(w, sep);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(''), 'latin1');
}

/** Size of file i: 0–2,047 bytes, a multiplicative hash of i. */
function sizeOf(i: number): number {
  return Math.imul(i + 1, 2654435761) >>> 21;
}

const pad = (x: number, width: number) => String(x).padStart(width, '0');

/** One entry of the generated layer, in GNU tar's `--sort=name` order (parents first). */
export interface ScaleEntry {
  /** Relative path without "./" and without a trailing slash ("." for the root). */
  path: string;
  dir: boolean;
  /** File contents (empty for a directory). */
  body: Buffer;
}

/** The layer's entries in archive order: the root ("."), scale/, then each dI/ followed by its files. */
export function* scaleEntries(n: number): Generator<ScaleEntry> {
  const { dirs, perDir } = layout(n);
  const text = pseudoText();
  const dw = String(dirs - 1).length;
  const fw = String(perDir - 1).length;
  const none = Buffer.alloc(0);
  yield { path: '.', dir: true, body: none };
  yield { path: 'scale', dir: true, body: none };
  let i = 0;
  for (let d = 0; d < dirs && i < n; d++) {
    const dname = `scale/d${pad(d, dw)}`;
    yield { path: dname, dir: true, body: none };
    for (let f = 0; f < perDir && i < n; f++, i++) {
      const rel = `${dname}/f${pad(f, fw)}`;
      const size = sizeOf(i);
      const head = Buffer.from(`# ${rel} (${i})\n`, 'latin1');
      let body: Buffer;
      if (size <= head.length) body = head.subarray(0, size);
      else {
        const start = (Math.imul(i, 7919) >>> 0) % PSEUDO_TEXT_BYTES;
        body = Buffer.concat([head, text.subarray(start, start + size - head.length)]);
      }
      yield { path: rel, dir: false, body };
    }
  }
}

/**
 * Writes the layer as a tree under dir (0755 directories, 0644 files, owner and mtime as the
 * process leaves them); GNU tar with the options of ensureScaleData turns it into the same
 * bytes as writeScaleTar (checked by bench/selftest.ts).
 */
export function writeScaleTree(dir: string, n: number): void {
  const old = process.umask(0o022);
  try {
    for (const e of scaleEntries(n)) {
      if (e.path === '.') {
        mkdirSync(dir, { recursive: true });
        chmodSync(dir, 0o755);
      } else if (e.dir) mkdirSync(join(dir, e.path), { mode: 0o755 });
      else writeFileSync(join(dir, e.path), e.body, { mode: 0o644 });
    }
  } finally {
    process.umask(old);
  }
}

/** GNU tar's options that make writeScaleTree's tree into writeScaleTar's bytes (`tar OPTIONS -C TREE -cf TAR .`). */
export const GNU_TAR_SCALE_OPTIONS = [
  '--format=pax',
  '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
  '--sort=name', '--numeric-owner', '--owner=0', '--group=0', `--mtime=@${SCALE_MTIME}`,
];

const RECORD = 10240;

/** A ustar header as GNU tar 1.34 writes it for these entries (pax format, nothing extended). */
function header(name: string, dir: boolean, size: number, linkname?: string): Buffer {
  const h = Buffer.alloc(512);
  if (Buffer.byteLength(name) > 100) throw new Error(`scale: name longer than 100 bytes: ${name}`);
  const oct = (v: number, width: number) => v.toString(8).padStart(width - 1, '0') + '\0';
  h.write(name, 0, 'latin1');
  h.write(oct(dir ? 0o755 : 0o644, 8), 100, 'latin1');
  h.write(oct(0, 8), 108, 'latin1');
  h.write(oct(0, 8), 116, 'latin1');
  h.write(oct(size, 12), 124, 'latin1');
  h.write(oct(SCALE_MTIME, 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(dir ? '5' : linkname !== undefined ? '1' : '0', 156, 'latin1');
  if (linkname !== undefined) h.write(linkname, 157, 'latin1');
  h.write('ustar\x0000', 257, 'latin1');
  h.write(oct(0, 8), 329, 'latin1');
  h.write(oct(0, 8), 337, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/**
 * A pax extended header carrying POSIX ACLs (GNU tar's SCHILY.acl.* records, numeric group):
 * a licensed tree, where every file and directory has one.
 */
function aclHeader(dir: boolean, group: number): Buffer {
  const rec = (k: string, v: string) => {
    const body = ` ${k}=${v}\n`;
    let len = body.length + 1;
    while (`${len}${body}`.length !== len) len = `${len}${body}`.length;
    return `${len}${body}`;
  };
  const text = (x: string) => `user::rw${x}\ngroup::r-${x}\ngroup:${group}:r-${x}\nmask::r-${x}\nother::---\n`;
  const records = Buffer.from(rec('SCHILY.acl.access', text(dir ? 'x' : '-')) + (dir ? rec('SCHILY.acl.default', text('x')) : ''));
  const h = header('PaxHeader', false, records.length);
  h.write('x', 156, 'latin1');
  h.write('        ', 148, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const pad = (512 - (records.length % 512)) % 512;
  return Buffer.concat([h, records, Buffer.alloc(pad)]);
}

/**
 * Writes the layer straight to a tar file, byte for byte what GNU tar 1.34 writes from
 * writeScaleTree's tree with GNU_TAR_SCALE_OPTIONS (members "./…", the root "./", directories with a
 * trailing slash, two zero blocks, padded to 10,240-byte records). Returns bytes in files.
 * `reversed`: each directory's files in reverse order, an archive of the same layer that is
 * not in canonical order (the tests' import through the sorter). `aclGroup`: every entry but the
 * root carries an access ACL naming that group (directories a default ACL too), as GNU tar
 * --acls writes a licensed tree: not what GNU tar writes from writeScaleTree's tree.
 * `linkedAs`: the tree is followed by a second one under that name (a sibling of scale/), every
 * file of it a hard link to its twin under scale/, as a Spack view or a conda environment
 * made of hard links is archived (a name sorting before scale/, as "env", makes the sorted
 * layer's files the links' names and scale/'s files links to them).
 */
export function writeScaleTar(file: string, n: number, opts: { reversed?: boolean; aclGroup?: number; linkedAs?: string } = {}): number {
  const fd = openSync(file, 'wx', 0o644);
  const buf = Buffer.alloc(1 << 20);
  let used = 0;
  let total = 0;
  const put = (b: Buffer) => {
    if (used + b.length > buf.length) {
      writeSync(fd, buf, 0, used);
      used = 0;
    }
    b.copy(buf, used);
    used += b.length;
    total += b.length;
  };
  let bytes = 0;
  try {
    const write = (e: ScaleEntry) => {
      if (opts.aclGroup !== undefined && e.path !== '.') put(aclHeader(e.dir, opts.aclGroup));
      put(header(e.path === '.' ? './' : `./${e.path}${e.dir ? '/' : ''}`, e.dir, e.body.length));
      if (e.body.length) {
        put(e.body);
        const rest = (512 - (e.body.length % 512)) % 512;
        if (rest) put(Buffer.alloc(rest));
        bytes += e.body.length;
      }
    };
    let files: ScaleEntry[] = [];
    const flushFiles = () => {
      for (const f of files.reverse()) write(f);
      files = [];
    };
    for (const e of scaleEntries(n)) {
      if (!opts.reversed) write(e);
      else if (!e.dir) files.push(e);
      else {
        flushFiles();
        write(e);
      }
    }
    flushFiles();
    if (opts.linkedAs !== undefined) {
      const twin = (p: string) => `./${opts.linkedAs}${p.slice('scale'.length)}`;
      for (const e of scaleEntries(n)) {
        if (e.path === '.') continue;
        put(e.dir ? header(`${twin(e.path)}/`, true, 0) : header(twin(e.path), false, 0, `./${e.path}`));
      }
    }
    put(Buffer.alloc(1024));
    const tail = (RECORD - (total % RECORD)) % RECORD;
    if (tail) put(Buffer.alloc(tail));
    writeSync(fd, buf, 0, used);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/** The cached generated layer of n files, generating it when missing or stale. */
export async function ensureScaleData(root: string, n: number): Promise<ScaleData> {
  const dir = join(root, 'scale', String(n));
  const tar = join(dir, 'scale.tar');
  const stampPath = join(dir, 'stamp.json');
  if (existsSync(stampPath)) {
    const stamp = JSON.parse(await readFile(stampPath, 'utf8')) as ScaleStamp;
    if (stamp.version === SCALE_VERSION && stamp.n === n && existsSync(tar)) return { n, tar, stamp };
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const t0 = Date.now();
  log(`generating the ${n}-file layer …`);
  const tmp = `${tar}.tmp`;
  await rm(tmp, { force: true });
  const bytes = writeScaleTar(tmp, n);
  await rename(tmp, tar);
  const { dirs, perDir } = layout(n);
  const stamp: ScaleStamp = { version: SCALE_VERSION, n, dirs, perDir, bytes, tarBytes: (await stat(tar)).size, built: new Date().toISOString() };
  await writeFile(stampPath, JSON.stringify(stamp, null, 2) + '\n');
  log(`generated the ${n}-file layer in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return { n, tar, stamp };
}

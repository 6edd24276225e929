/**
 * Fixtures for the tar codec tests: a tree with every entry kind and metadata the codec must
 * carry, packed by the real GNU tar 1.34 and bsdtar 3.6, and the reference values read back
 * from the filesystem with lstat (test/helpers/tree.ts), getfattr and getfacl — never with
 * the code under test.
 *
 * The tree (under <dir>/tree, archived as "tree/…"):
 *   .                      0755, mtime T
 *   plain                  0644, "plain\n"
 *   xattr                  0640, user.text, user.bin (ff 00 0a ff 3d …), trusted.blob,
 *                          security.capability (setcap cap_net_raw+ep), ACL u:1234:r--
 *   acl-dir/               0750, access ACL u:1234:r-x, default ACL g:5678:r-x
 *   acl-dir/inner          0600
 *   <95 x 'n'>             archive path of exactly 100 bytes
 *   <96 x 'o'>             archive path of 101 bytes
 *   <255 x 'p'>            255-byte name (the longest ext4 allows)
 *   <150 x 'd'>/<144 x 'e'>  archive path of exactly 300 bytes
 *   longlink -> <200 bytes>  symlink with a 200-byte target (dangling)
 *   hl-a, hl-b             hard links to one file
 *   fifo                   mkfifo, 0600
 *   chr                    char device 4/67
 *   blk                    block device 7/300
 *   bigid                  uid 3000000, gid 3000001 (beyond ustar's 7 octal digits)
 *   old                    mtime -1000 (before the epoch)
 *   ünïcødé-✓              a UTF-8 name
 *
 * ACLs are chosen so the mask equals the group entry: the mode's group bits then agree
 * with the ACL and every packer stores the same mode.
 */
import { mkdirSync, symlinkSync, writeFileSync, linkSync, closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun } from './helpers/tmp.js';
import { snapshotTree, type TreeSnapshot } from './helpers/tree.js';
import { readTar, type TarHeader } from '../store/tar/reader.js';
import { isStrataError } from '../store/errors.js';

export const T = 1700000000;
export const NAME100 = 'n'.repeat(95);
export const NAME101 = 'o'.repeat(96);
export const NAME255 = 'p'.repeat(255);
export const DEEP = `${'d'.repeat(150)}/${'e'.repeat(144)}`;
export const LINK_TARGET = `../${'t'.repeat(197)}`;
export const UNICODE = 'ünïcødé-✓';
export const BIN_XATTR = Buffer.from([0xff, 0x00, 0x0a, 0xff, 0x3d, 0x20, 0x0a, 0x80, 0xc3, 0x28]);

export interface Fixture {
  /** The directory holding `tree/`. */
  dir: string;
  tree: string;
  snap: TreeSnapshot;
  /** Every xattr (system.posix_acl_* included) as getfattr -e hex shows it, per relative path. */
  allXattrs: Map<string, Map<string, string>>;
  /** File contents per relative path. */
  contents: Map<string, Buffer>;
}

function sh(cmd: string, ...args: string[]): Buffer {
  return mustRun(cmd, args).stdout;
}

/** Builds the tree described above under `dir`/tree and snapshots it. Needs root. */
export function buildTree(dir: string): Fixture {
  const tree = join(dir, 'tree');
  const p = (rel: string) => join(tree, rel);
  mkdirSync(tree);
  const contents = new Map<string, Buffer>();
  const file = (rel: string, data: string | Buffer, mode: number) => {
    const b = Buffer.from(data);
    writeFileSync(p(rel), b, { mode });
    sh('chmod', mode.toString(8), p(rel));
    contents.set(rel, b);
  };
  file('plain', 'plain\n', 0o644);
  file('xattr', 'with attributes\n', 0o640);
  sh('setfattr', '-n', 'user.text', '-v', 'hello world', p('xattr'));
  sh('setfattr', '-n', 'user.bin', '-v', '0x' + BIN_XATTR.toString('hex'), p('xattr'));
  sh('setfattr', '-n', 'trusted.blob', '-v', '0x00ff00ff', p('xattr'));
  sh('setfacl', '-m', 'u:1234:r--', p('xattr'));
  sh('setcap', 'cap_net_raw+ep', p('xattr'));
  mkdirSync(p('acl-dir'));
  sh('chmod', '0750', p('acl-dir'));
  file('acl-dir/inner', 'inner\n', 0o600);
  sh('setfacl', '-m', 'u:1234:r-x', p('acl-dir'));
  sh('setfacl', '-d', '-m', 'g:5678:r-x', p('acl-dir'));
  file(NAME100, 'a hundred\n', 0o644);
  file(NAME101, 'a hundred and one\n', 0o644);
  file(NAME255, 'long name\n', 0o644);
  mkdirSync(p(DEEP.split('/')[0]!));
  file(DEEP, 'deep\n', 0o644);
  symlinkSync(LINK_TARGET, p('longlink'));
  file('hl-a', 'linked twice\n', 0o644);
  linkSync(p('hl-a'), p('hl-b'));
  sh('mkfifo', '-m', '0600', p('fifo'));
  sh('mknod', '-m', '0620', p('chr'), 'c', '4', '67');
  sh('mknod', '-m', '0660', p('blk'), 'b', '7', '300');
  file('bigid', 'big ids\n', 0o644);
  sh('chown', '-h', '3000000:3000001', p('bigid'));
  file(UNICODE, 'utf-8\n', 0o644);
  file('old', 'before the epoch\n', 0o644);
  sh('find', tree, '-depth', '-exec', 'touch', '-h', '-d', `@${T}`, '{}', '+');
  sh('touch', '-h', '-d', '@-1000', p('old'));

  const snap = snapshotTree(tree);
  const allXattrs = new Map<string, Map<string, string>>();
  for (const rel of snap.keys()) {
    const out = mustRun('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', rel === '.' ? tree : p(rel)]);
    const m = new Map<string, string>();
    for (const line of out.stdout.toString('utf8').split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const eq = line.indexOf('=');
      const v = line.slice(eq + 1);
      m.set(line.slice(0, eq), v === '""' ? '' : v.replace(/^0x/, ''));
    }
    allXattrs.set(rel, m);
  }
  return { dir, tree, snap, allXattrs, contents };
}

/** Archive path "tree/x/" → relative path "x" ("tree/" → "."). */
export function relOf(archivePath: string): string {
  const s = archivePath.replace(/\/+$/, '');
  if (s === 'tree') return '.';
  if (!s.startsWith('tree/')) throw new Error(`unexpected archive path ${archivePath}`);
  return s.slice(5);
}

export interface ReadEntry {
  header: TarHeader;
  data: Buffer;
}

/** Reads every entry with its body (copied). */
export async function readAll(source: AsyncIterable<Uint8Array>): Promise<ReadEntry[]> {
  const out: ReadEntry[] = [];
  for await (const e of readTar(source)) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(Buffer.from(c));
    out.push({ header: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

/** A file as chunks of `size` bytes (tiny sizes exercise blocks straddling chunks). */
export async function* fileChunks(path: string, size = 65536): AsyncGenerator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const b = Buffer.allocUnsafe(size);
      const n = readSync(fd, b, 0, size, null);
      if (n === 0) return;
      yield b.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

export async function* bytes(b: Buffer, size = b.length || 1): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

/** Awaits `p` and returns the StrataError it must reject with (code checked). */
export async function rejection(p: Promise<unknown>, code: string): Promise<Error & { code: string; hint?: string }> {
  try {
    await p;
  } catch (e) {
    if (!isStrataError(e, code)) {
      throw new Error(`expected StrataError ${code}, got ${(e as Error)?.stack ?? String(e)}`);
    }
    if (e.message.includes('\n')) throw new Error(`error message is not one line: ${e.message}`);
    return e as Error & { code: string; hint?: string };
  }
  throw new Error(`expected StrataError ${code}, but it succeeded`);
}

/**
 * Extracts a SquashFS image (read with SquashfsImage) into a directory, like
 * `unsquashfs -d DIR`: contents (holes kept as holes), modes, owners, mtimes, symlinks, hard
 * links, device nodes and fifos, extended attributes.
 *
 * Safety contract:
 * - `dir` must be absent (it is created) or an empty directory; anything else is
 *   ERR_TARGET_NOT_EMPTY. Nothing is ever written outside it.
 * - Every path goes through safeJoin() (plain names only, no '..', no '/'), and its parent
 *   must be a directory this extraction created, so no symlink from the image is ever
 *   traversed. Every object is created exclusively (O_EXCL, mkdir, symlink, link, mknod
 *   fail on an existing name) and metadata is set without following symlinks: through the
 *   open descriptor for files and directories, lchown/lutimes/lsetxattr for the rest.
 * - Directory metadata (mode, owner, xattrs, mtime) is applied after their contents, deepest
 *   first, so read-only directories and mtimes come out right.
 * - What the process may not do is skipped and counted, never fatal: ownership other than
 *   its own when not root ('ownership'), device nodes when not root ('device'), xattrs the
 *   kernel or filesystem refuses, e.g. trusted.* as non-root or user.* on a symlink
 *   ('xattr'), sockets ('socket', SquashFS can hold them, a layer cannot).
 * Not atomic: on error the directory holds a partial tree.
 */
import { constants as C } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, symlink, link, lchown, lutimes, chmod, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { COMPOSE_ERR } from '../errors.js';
import { StrataError, IMAGE_ERR } from '../image/errors.js';
import { lsetxattr, mknod } from '../../native/xattr.js';
import { q, type SquashfsImage, type ImageEntry } from './reader.js';

export interface ExtractOptions {
  /** Called once for every entry or attribute left out; `what` is the kind counted in `skipped`. */
  onSkip?(what: string, path: string): void;
}

export interface ExtractResult {
  /** Entries written, the root '.' included. */
  entries: number;
  /** Kind ('ownership', 'device', 'xattr', 'socket') → how many times it was skipped. */
  skipped: Record<string, number>;
}

const FILES_IN_FLIGHT = 8;

/** `root` joined with a canonical path; throws on any component that could escape. */
export function safeJoin(root: string, path: string): string {
  if (path === '.') return root;
  const parts = path.split('/');
  for (const p of parts) {
    if (p === '' || p === '.' || p === '..' || p.includes('\0')) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `unsafe path ${JSON.stringify(path)} in image`);
    }
  }
  return join(root, ...parts);
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '.' : path.slice(0, i);
}

/**
 * Extracts every entry of `image` into `dir` (see the file comment for the contract).
 * Returns how many entries were written and what was skipped.
 */
export async function extractImage(image: SquashfsImage, dir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const root = await prepareTarget(dir);
  const isRoot = process.getuid?.() === 0;
  const myUid = process.getuid?.() ?? -1;
  const myGid = process.getgid?.() ?? -1;
  const skipped: Record<string, number> = {};
  const skip = (what: string, path: string) => {
    skipped[what] = (skipped[what] ?? 0) + 1;
    opts.onSkip?.(what, path);
  };
  const zeros = Buffer.alloc(image.superblock.blockSize);
  const dirs: ImageEntry[] = [];
  const dirPaths = new Set<string>();
  const linkTargets = new Set<string>();
  /** First names of hard-linked devices not made (non-root): their other names are skipped too. */
  const skippedTargets = new Set<string>();
  let entries = 0;

  const mayChown = (e: ImageEntry): boolean => {
    if (isRoot || (e.uid === myUid && e.gid === myGid)) return true;
    skip('ownership', e.path);
    return false;
  };
  const setXattrs = (e: ImageEntry, abs: string) => {
    if (!e.xattrs) return;
    for (const [name, value] of e.xattrs) {
      try {
        lsetxattr(abs, name, value);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EACCES') skip('xattr', `${e.path} ${name}`);
        else throw err;
      }
    }
  };
  /** Owner, mode, xattrs, mtime, in that order (chown clears setuid bits and capabilities), through an open descriptor. */
  const applyThroughHandle = async (fh: FileHandle, e: ImageEntry, abs: string) => {
    if (mayChown(e)) await fh.chown(e.uid, e.gid);
    await fh.chmod(e.mode);
    setXattrs(e, abs);
    await fh.utimes(e.mtime, e.mtime);
  };

  const writeFile = async (e: ImageEntry, abs: string) => {
    const fh = await open(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    try {
      let pos = 0;
      for await (const chunk of image.openFile(e)) {
        if (!zeros.subarray(0, chunk.length).equals(chunk)) {
          let done = 0;
          while (done < chunk.length) done += (await fh.write(chunk, done, chunk.length - done, pos + done)).bytesWritten;
        }
        pos += chunk.length;
      }
      await fh.truncate(pos);
      await applyThroughHandle(fh, e, abs);
    } finally {
      await fh.close();
    }
  };

  // Regular files are written a few at a time so the thread pool overlaps their system
  // calls; everything else is made in walk order. A hard link waits for its target's task.
  const tasks = new Set<Promise<void>>();
  const fileTasks = new Map<string, Promise<void>>();
  const failed: unknown[] = [];
  const spawn = async (fn: () => Promise<void>, key: string | undefined) => {
    const p: Promise<void> = fn()
      .catch((err: unknown) => void failed.push(err))
      .finally(() => tasks.delete(p));
    tasks.add(p);
    if (key !== undefined) fileTasks.set(key, p);
    while (tasks.size >= FILES_IN_FLIGHT) await Promise.race(tasks);
    if (failed.length > 0) throw failed[0];
  };

  try {
    await walkAndMake();
    await Promise.all(tasks);
    if (failed.length > 0) throw failed[0];
  } finally {
    await Promise.allSettled(tasks);
  }

  for (let i = dirs.length - 1; i >= 0; i--) {
    const e = dirs[i]!;
    const abs = safeJoin(root, e.path);
    const fh = await open(abs, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      await applyThroughHandle(fh, e, abs);
    } finally {
      await fh.close();
    }
  }
  return { entries, skipped };

  async function walkAndMake(): Promise<void> {
    for await (const e of image.walk({ onSkip: skip })) {
      if (e.path !== '.' && !dirPaths.has(parentOf(e.path))) {
        throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: entry ${q(e.path)} comes before its directory`);
      }
      const abs = safeJoin(root, e.path);
      switch (e.type) {
        case 'dir':
          if (e.path !== '.') await mkdir(abs, 0o700);
          dirs.push(e);
          dirPaths.add(e.path);
          break;
        case 'file':
          await spawn(() => writeFile(e, abs), e.nlink > 1 ? e.path : undefined);
          if (e.nlink > 1) linkTargets.add(e.path);
          break;
        case 'hardlink': {
          const target = e.linkname!;
          if (skippedTargets.has(target)) {
            skip('device', e.path);
            continue;
          }
          if (!linkTargets.has(target)) {
            throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: hard link ${q(e.path)} to ${q(target)}, which is not an earlier entry`);
          }
          await fileTasks.get(target);
          if (failed.length > 0) throw failed[0];
          await link(safeJoin(root, target), abs);
          break;
        }
        case 'symlink':
          await symlink(e.linkname!, abs);
          if (mayChown(e)) await lchown(abs, e.uid, e.gid);
          setXattrs(e, abs);
          await lutimes(abs, e.mtime, e.mtime);
          if (e.nlink > 1) linkTargets.add(e.path);
          break;
        case 'char':
        case 'block':
        case 'fifo': {
          if (e.type !== 'fifo' && !isRoot) {
            skip('device', e.path);
            if (e.nlink > 1) skippedTargets.add(e.path);
            continue;
          }
          const fmt = e.type === 'char' ? C.S_IFCHR : e.type === 'block' ? C.S_IFBLK : C.S_IFIFO;
          mknod(abs, fmt | 0o600, e.devmajor ?? 0, e.devminor ?? 0);
          if (mayChown(e)) await lchown(abs, e.uid, e.gid);
          // A node we just made in a directory only we have written to: chmod cannot be led astray.
          await chmod(abs, e.mode);
          setXattrs(e, abs);
          await lutimes(abs, e.mtime, e.mtime);
          if (e.nlink > 1) linkTargets.add(e.path);
          break;
        }
      }
      entries++;
    }
  }
}

/** Creates `dir` or checks it is an empty directory; returns its real path. */
async function prepareTarget(dir: string): Promise<string> {
  let st;
  try {
    st = await lstat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return realpath(dir);
  }
  if (!st.isDirectory()) {
    throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${dir} exists and is not a directory`, { hint: 'give a new or empty directory' });
  }
  if ((await readdir(dir)).length > 0) {
    throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${dir} is not empty`, { hint: 'give a new or empty directory' });
  }
  return realpath(dir);
}

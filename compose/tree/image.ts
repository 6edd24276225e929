/**
 * An image read into a directory through the one tree writer, like `unsquashfs -d DIR`:
 * contents (holes kept as holes), modes, owners, mtimes, symlinks, hard links, device nodes
 * and fifos, extended attributes; with `restore`, modes and POSIX ACLs put back from the
 * image's /.strata/acl.json (compose/unsquash.ts).
 *
 * Contract:
 * - DIR as compose/tree/target.ts says: absent or an empty directory of the caller; the tree
 *   is built privately and put in place at the end, so on any error DIR is left as it was.
 * - Paths come from the image and are checked: plain names only (no '', '.', '..', '/'),
 *   each below a directory met earlier (the walk is depth first, parents first); a hard
 *   link of an inode of more than one name names an earlier path (its inode's first name:
 *   ImageReader.walk). Anything else is ERR_IMAGE_CORRUPT. Nothing is ever written outside
 *   DIR.
 * - Memory: nothing grows with the files or the links (the directories spill, compose/tree/dirs.ts;
 *   the reader finds hard links through sorters in `scratchDir`).
 * - What the process may not do is skipped and counted with the writer's vocabulary
 *   ('ownership', 'device nodes', '<ns>.* xattrs', 'POSIX ACLs', 'unmapped ACLs') plus 'sockets', which
 *   SquashFS can hold and a tree of layers cannot.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { comparePaths, type LayerEntry } from '../../store/index.js';
import { StrataError, IMAGE_ERR } from '../image/errors.js';
import { q, type ImageEntry, type ImageReader } from '../image/index.js';
import { DirList } from './dirs.js';
import { HELD_MAX, HeldFiles } from './held.js';
import { buildTree, type TreeOptions, type TreeResult } from './index.js';
import type { SkipKind, TreeWriter } from './writer.js';

/** What /.strata/acl.json says of one path: the mode before the image narrowed it, the ACLs, maybe the group. */
export interface Restore {
  mode: number;
  gid?: number;
  access?: string;
  default?: string;
}

/** Modes and ACLs to put back (compose/unsquash.ts reads them from /.strata/acl.json). */
export interface RestoreLookup {
  /** What to put back on `path`; asked for every entry, in walk order, each once. */
  lookup(path: string): Restore | undefined;
  /** After the walk: throws if a path to restore was not an entry of the image. */
  finish(): void;
}

export interface ExtractOptions extends Pick<TreeOptions, 'force'> {
  /** Called once for every entry or attribute left out. */
  onSkip?(kind: SkipKind, path: string): void;
  restore?: RestoreLookup;
  /** Where the directory list and the walk's hard links spill past their budgets (a directory strata owns); the system's tmp by default. */
  scratchDir?: string;
}

export interface ExtractResult extends TreeResult {
  /** Entries written, the root '.' included. */
  entries: number;
  /** Paths whose ACLs were put back from `restore`. */
  acls: number;
}

const FILES_IN_FLIGHT = 8;
/** The stretch of zeros left a hole: a page, the unit filesystems allocate in. */
const HOLE_GRAIN = 4096;

const DOT = 0x2e;

/**
 * Throws ERR_IMAGE_CORRUPT unless `path` is '.' or canonical (plain names joined by '/': none
 * empty, '.' or '..', no NUL). Read in place, name by name: it runs for every entry.
 */
export function checkPath(path: string, where: string): void {
  if (path === '.') return;
  for (let start = 0; ; ) {
    const slash = path.indexOf('/', start);
    const end = slash < 0 ? path.length : slash;
    const n = end - start;
    if (n === 0 || (path.charCodeAt(start) === DOT && (n === 1 || (n === 2 && path.charCodeAt(start + 1) === DOT)))) break;
    if (slash < 0) {
      if (!path.includes('\0')) return;
      break;
    }
    start = slash + 1;
  }
  throw new StrataError(IMAGE_ERR.CORRUPT, `${where}: unsafe path ${q(path)}`);
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '.' : path.slice(0, i);
}

/** Extracts every entry of `image` into `dir` (see the file comment). */
export async function extractImage(image: ImageReader, dir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const restore = opts.restore;
  const dirs = new DirList(opts.scratchDir ?? os.tmpdir());
  try {
    return await buildTree(dir, { force: opts.force, onSkip: opts.onSkip }, fill);
  } finally {
    dirs.dispose();
  }

  async function fill(w: TreeWriter): Promise<{ root: LayerEntry; value: { entries: number; acls: number } }> {
    /** The directories from the root to the last one met: an entry's parent must be one of them (the walk is depth first). */
    const chain: string[] = [];
    let entries = 0;
    let acls = 0;

    const withRestore = (e: ImageEntry): LayerEntry => {
      const r = restore?.lookup(e.path);
      if (r === undefined) return e;
      if (r.access || r.default) acls++;
      return { ...e, mode: r.mode, gid: r.gid ?? e.gid, acl: { access: r.access, default: r.default } };
    };

    // Holes are skipped, not written: the file stays sparse, and a file of huge holes costs
    // work in its stored pieces only (contentPieces()). Within what the image stores, every
    // aligned 4 KiB of zeros is left a hole too (an EROFS extent holds data and zeros alike; a
    // SquashFS block is 128 KiB).
    const zeros = Buffer.alloc(HOLE_GRAIN);
    /** The runs of `data` (at `offset` in its file) that are not aligned HOLE_GRAIN-byte stretches of zeros. */
    const dataRuns = (offset: number, data: Buffer, out: { offset: number; data: Buffer }[]) => {
      let from = -1;
      for (let at = 0; at < data.length; ) {
        const next = Math.min(data.length, at + HOLE_GRAIN - ((offset + at) % HOLE_GRAIN));
        const zero = zeros.compare(data, at, next, 0, next - at) === 0;
        if (zero && from >= 0) {
          out.push({ offset: offset + from, data: data.subarray(from, at) });
          from = -1;
        } else if (!zero && from < 0) from = at;
        at = next;
      }
      if (from >= 0) out.push({ offset: offset + from, data: from === 0 ? data : data.subarray(from) });
    };
    // A small file is held, and written with others on the pool (held.ts); a large one is
    // written here as it is read.
    const writeFile = async (e: LayerEntry, src: ImageEntry): Promise<{ written: Promise<void> } | undefined> => {
      if (src.size <= HELD_MAX) {
        const pieces: { offset: number; data: Buffer }[] = [];
        let size = 0;
        for await (const { offset, length, data } of image.contentPieces(src)) {
          if (data) dataRuns(offset, data, pieces);
          size = offset + length;
        }
        return held.hold(e, pieces, size);
      }
      const fd = w.createFile(e.path);
      try {
        let end = 0;
        let size = 0;
        const runs: { offset: number; data: Buffer }[] = [];
        for await (const { offset, length, data } of image.contentPieces(src)) {
          if (data) dataRuns(offset, data, runs);
          for (const r of runs.splice(0)) {
            for (let done = 0; done < r.data.length; ) done += fs.writeSync(fd, r.data, done, r.data.length - done, r.offset + done);
            end = r.offset + r.data.length;
          }
          size = offset + length;
        }
        if (end < size) fs.ftruncateSync(fd, size);
      } catch (err) {
        fs.closeSync(fd);
        throw err;
      }
      w.finishFile(fd, e);
      return undefined;
    };

    // Files are read a few at a time so image reads overlap; everything else is made in walk
    // order. A hard link waits for its target to be written: the files of more than one name
    // not written yet (in flight, or held in a batch) are kept by path, and dropped once
    // written, so memory does not grow with the links. One that failed stays: a link to it
    // fails with its error.
    const held = new HeldFiles(w);
    const tasks = new Set<Promise<void>>();
    const fileTasks = new Map<string, Promise<{ written: Promise<void> } | undefined>>();
    const failed: unknown[] = [];
    // The walk waits for room (a file read ending) on a promise of its own: a Promise.race
    // over the reads in flight added a reaction to each of them per file.
    let roomMade: (() => void) | undefined;
    const ended = (p: Promise<void>) => {
      tasks.delete(p);
      roomMade?.();
    };
    const spawn = async (read: Promise<{ written: Promise<void> } | undefined>, key: string | undefined) => {
      const p: Promise<void> = read.then(
        () => ended(p),
        (err: unknown) => {
          failed.push(err);
          ended(p);
        },
      );
      tasks.add(p);
      if (key !== undefined) {
        fileTasks.set(key, read);
        read
          .then((r) => r?.written)
          .then(
            () => {
              if (fileTasks.get(key) === read) fileTasks.delete(key);
            },
            () => {},
          );
      }
      while (tasks.size >= FILES_IN_FLIGHT) await new Promise<void>((resolve) => (roomMade = resolve));
      roomMade = undefined;
      if (failed.length > 0) throw failed[0];
    };

    let root: LayerEntry | undefined;
    try {
      for await (const src of image.walk({ onSkip: (_what, p) => w.skip('sockets', p), scratchDir: opts.scratchDir })) {
        checkPath(src.path, image.path);
        if (src.path !== '.') {
          const parent = parentOf(src.path);
          while (chain.length > 0 && chain[chain.length - 1] !== parent) chain.pop();
          if (chain.length === 0) throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: entry ${q(src.path)} comes before its directory`);
        } else if (entries > 0) {
          throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: the root comes twice`);
        }
        const e = withRestore(src);
        switch (e.type) {
          case 'dir':
            if (e.path === '.') root = e;
            else w.mkdir(e);
            dirs.push(e);
            chain.push(e.path);
            break;
          case 'file':
            await spawn(writeFile(e, src), src.nlink > 1 ? e.path : undefined);
            break;
          case 'hardlink': {
            // The reader names an earlier entry of the same inode (ImageReader.walk); what is
            // checked here costs no memory per link.
            const target = e.linkname!;
            if (src.nlink < 2 || comparePaths(target, e.path) >= 0) {
              throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: hard link ${q(e.path)} to ${q(target)}, which is not an earlier entry`);
            }
            const t = await fileTasks.get(target);
            if (t) await held.wait(t.written);
            w.hardlink(e);
            if (e !== src) w.restoreAt(e);
            break;
          }
          case 'symlink':
            // ACLs never apply to symlinks: an acl.json entry naming one is left out.
            w.symlink(src);
            break;
          case 'char':
          case 'block':
          case 'fifo':
            w.node(e);
            break;
        }
        entries++;
      }
      await Promise.all(tasks);
      if (failed.length > 0) throw failed[0];
      await held.flush();
    } finally {
      await Promise.allSettled(tasks);
      await held.settled();
    }
    restore?.finish();
    w.finishDirs(dirs.deepestFirst());
    if (root === undefined) throw new StrataError(IMAGE_ERR.CORRUPT, `${image.path}: no root directory`);
    return { root, value: { entries, acls } };
  }
}

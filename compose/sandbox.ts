/**
 * The sandbox: the merged tree written into a directory, with ownership, modes, mtimes, hard
 * links, symlinks, devices, xattrs and ACLs, through the one tree writer (compose/tree/).
 *
 * Safety: the tree is built in a private directory and put in place at the end (so a failed
 * build leaves DIR as it was), every entry is created below a directory descriptor without
 * following a link, and paths come from the merge plan (canonical, never below a symlink).
 *
 * Order of work: (1) directories (0700 until the end), symlinks, device nodes and fifos, in
 * path order; (2) file contents, one pass over each layer in stack order, each file created
 * ahead and written behind on other threads (tree/ahead.ts, tree/write-behind.ts) and its
 * metadata applied through its descriptor once written, then the embedded files; (3) hard
 * links; (4) directory metadata, deepest first; the root last, when the tree goes in place.
 */
import type { LoadedModule, Store, LayerEntry } from '../store/index.js';
import { embeddedPlanned, forEachPlannedFile, type MergePlan } from './merge.js';
import { AHEAD_DEPTH, buildTree, CreateAhead, WriteBehind, type TreeResult } from './tree/index.js';

export interface SandboxResult extends TreeResult {
  entries: number;
  bytes: number;
}

export interface SandboxOptions {
  force?: boolean;
  /** Paths the target must not hold under --force (the store). */
  keep?: string[];
  /** gid of the output's licence group (compose/outputs.ts outputLicence()). */
  licenceGid?: number;
  onProgress?(done: number, total: number): void;
}

export async function writeSandbox(
  store: Store,
  layers: LoadedModule[],
  plan: MergePlan,
  embedded: Map<string, Buffer>,
  target: string,
  opts: SandboxOptions = {},
): Promise<SandboxResult> {
  return buildTree(target, opts, async (w) => {
    let bytes = 0;
    const total = plan.bytes;
    const dirs: LayerEntry[] = [];
    let hardlinks = 0;

    // 1. Directories, symlinks, device nodes and fifos, in path order.
    for (const { entry: e } of plan.entries()) {
      switch (e.type) {
        case 'dir':
          dirs.push(e);
          if (e.path !== '.') w.mkdir(e);
          break;
        case 'symlink':
          w.symlink(e);
          break;
        case 'char':
        case 'block':
        case 'fifo':
          w.node(e);
          break;
        case 'hardlink':
          hardlinks++;
          break;
      }
    }
    w.close();

    // 2. File contents, one pass over each layer in order. Files are created ahead
    //    (tree/ahead.ts) and written behind (tree/write-behind.ts) on libuv's pool, so the
    //    kernel's share of the work runs on the other core while this thread reads and verifies
    //    the layers; each file's metadata goes on through its descriptor once it is written.
    const ahead = new CreateAhead(w.root, (p) => w.createFile(p));
    const behind = new WriteBehind((p, err) => w.failure(p, err));
    const write = async (e: LayerEntry, body: AsyncIterable<Uint8Array> | Uint8Array, fd: number) => {
      const file = behind.open(fd, e.path);
      try {
        if (body instanceof Uint8Array) await file.write(body);
        else for await (const c of body) await file.write(c);
      } catch (err) {
        file.close();
        throw err;
      }
      bytes += e.size;
      file.close(() => w.finishFile(fd, e));
    };
    try {
      await forEachPlannedFile(
        store,
        layers,
        plan,
        async (e, body) => {
          await write(e, body, await ahead.take(e.path));
          opts.onProgress?.(bytes, total);
        },
        { depth: AHEAD_DEPTH, see: (f) => ahead.want(f.entry.path) },
      );
      for (const { entry, content } of embeddedPlanned(plan, layers.length, embedded)) await write(entry, content, w.createFile(entry.path));
      await behind.drain();
    } finally {
      await Promise.all([ahead.settle(), behind.settled()]);
    }

    // 3. Hard links, to files, symlinks and nodes made above.
    //    (A walk of the whole plan: skipped when phase 1 met none.)
    if (hardlinks > 0) for (const { entry: e } of plan.entries()) if (e.type === 'hardlink') w.hardlink(e);

    // 4. Directory metadata, deepest first; the root goes last, with the tree into place.
    w.finishDirs(dirs);
    return { root: plan.root, value: { entries: plan.count, bytes } };
  });
}

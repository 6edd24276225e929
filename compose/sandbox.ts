/**
 * The sandbox: the merged tree written into a directory, with ownership, modes, mtimes, hard
 * links, symlinks, devices, xattrs and ACLs, through the one tree writer (compose/tree/).
 *
 * Safety: the tree is built in a private directory and put in place at the end (so a failed
 * build leaves DIR as it was), every entry is created below a directory descriptor without
 * following a link, and paths come from the merge plan (canonical, never below a symlink).
 *
 * Order of work: (1) directories (0700 until the end), symlinks, device nodes and fifos, in
 * path order; (2) file contents, one pass over each layer in stack order, each file's
 * metadata applied through its descriptor once written, then the embedded files; (3) hard
 * links; (4) directory metadata, deepest first; the root last, when the tree goes in place.
 */
import * as fs from 'node:fs';
import type { LoadedModule, Store, LayerEntry } from '../store/index.js';
import { embeddedPlanned, forEachPlannedFile, type MergePlan } from './merge.js';
import { buildTree, type TreeResult } from './tree/index.js';

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
      }
    }
    w.close();

    // 2. File contents, one pass over each layer in order. Synchronous writes spare each small
    //    file a thread-pool round trip; only reading layers is async.
    const writeAll = (fd: number, c: Uint8Array) => {
      for (let off = 0; off < c.byteLength; ) off += fs.writeSync(fd, c, off, c.byteLength - off);
      bytes += c.byteLength;
    };
    const write = async (e: LayerEntry, body: AsyncIterable<Uint8Array> | Uint8Array) => {
      const fd = w.createFile(e.path);
      try {
        if (body instanceof Uint8Array) writeAll(fd, body);
        else for await (const c of body) writeAll(fd, c);
      } catch (err) {
        fs.closeSync(fd);
        throw err;
      }
      w.finishFile(fd, e);
    };
    await forEachPlannedFile(store, layers, plan, async (e, body) => {
      await write(e, body);
      opts.onProgress?.(bytes, total);
    });
    for (const { entry, content } of embeddedPlanned(plan, layers.length, embedded)) await write(entry, content);

    // 3. Hard links, to files, symlinks and nodes made above.
    for (const { entry: e } of plan.entries()) if (e.type === 'hardlink') w.hardlink(e);

    // 4. Directory metadata, deepest first; the root goes last, with the tree into place.
    w.finishDirs(dirs);
    return { root: plan.root, value: { entries: plan.count, bytes } };
  });
}

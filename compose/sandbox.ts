/**
 * The sandbox: the merged tree written into a directory, with ownership, modes, mtimes, hard
 * links, symlinks, devices, xattrs and ACLs, through the one tree writer (compose/tree/).
 *
 * Safety: the tree is built in a private directory and put in place at the end (so a failed
 * build leaves DIR as it was), every entry is created below a directory descriptor without
 * following a link, and paths come from the merge plan (canonical, never below a symlink).
 *
 * Order of work: (1) directories (0700 until the end), symlinks, device nodes and fifos, in
 * path order; (2) file contents: each layer's blob read once, whole, on a thread of libuv's
 * pool, which verifies it and writes the files the plan takes from it, two layers at once
 * (tree/layers.ts), then the embedded files; (3) hard links; (4) directory metadata, deepest
 * first; the root last, when the tree goes in place.
 */
import * as fs from 'node:fs';
import type { LoadedModule, Store, LayerEntry } from '../store/index.js';
import { embeddedPlanned, forEachPlannedFile, type MergePlan } from './merge.js';
import type { EmbeddedFiles } from './embedded.js';
import { buildTree, canExtract, DirList, extractLayers, type TreeResult, type TreeWriter } from './tree/index.js';

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
  embedded: EmbeddedFiles,
  target: string,
  opts: SandboxOptions = {},
): Promise<SandboxResult> {
  const dirs = new DirList(await store.scratchDir());
  try {
    return await buildTree(target, opts, fill);
  } finally {
    dirs.dispose();
  }

  async function fill(w: TreeWriter) {
    let bytes = 0;
    const total = plan.bytes;
    let hardlinks = 0;

    // 1. Directories, symlinks, device nodes and fifos, in path order.
    for (const { entry: e } of plan.others()) {
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

    // 2. File contents: each layer's blob read whole on another thread, which writes the files
    //    the plan takes from it (tree/layers.ts); a store without blob files, or a process
    //    without libcrypto's sha256, takes the layers as readLayer streams them. Then the
    //    embedded files.
    const written = (n: number) => {
      bytes += n;
      opts.onProgress?.(bytes, total);
    };
    if (canExtract(store)) await extractLayers(w, store, layers, plan, written);
    else {
      await forEachPlannedFile(store, layers, plan, async (e, body) => {
        await writeFile(w, e, body);
        written(e.size);
      });
    }
    for (const { entry, content } of embeddedPlanned(plan, layers.length, embedded)) await writeFile(w, entry, content.chunks());

    // 3. Hard links, to files, symlinks and nodes made above.
    if (hardlinks > 0) for (const { entry: e } of plan.others()) if (e.type === 'hardlink') w.hardlink(e);

    // 4. Directory metadata, deepest first; the root goes last, with the tree into place.
    w.finishDirs(dirs.deepestFirst());
    return { root: plan.root, value: { entries: plan.count, bytes } };
  }
}

/** A file created, written and finished on this thread. */
async function writeFile(w: TreeWriter, e: LayerEntry, body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
  const fd = w.createFile(e.path);
  try {
    for await (const chunk of body) {
      for (let at = 0; at < chunk.byteLength; ) at += fs.writeSync(fd, chunk, at);
    }
  } catch (err) {
    fs.closeSync(fd);
    throw w.failure(e.path, err);
  }
  w.finishFile(fd, e);
}

/**
 * A stack's file contents written into a tree straight from the layer blobs, by native
 * sessions on libuv's pool (native/extract.ts): the sandbox's second phase.
 *
 * Each layer's blob is read once, whole, on another thread, which hashes it, hashes its header
 * blocks apart, and writes the files the plan takes from it. The plan decides every file
 * (where it goes, which member's body it gets) and this thread decides its owner, mode, access
 * ACL and mtime with the writer's own policy (TreeWriter.plainFinish); a file it cannot finish
 * there (xattrs, say) comes back open and TreeWriter.finishFile finishes it here. Several layers are read at once
 * (the plan gives every path to exactly one layer). Once a layer's blob has been read to its
 * end, the store checks both digests (StoreReader.openLayerBlob): the blob's against its
 * name, the entry list its headers give against the one the plan was made from. The tree goes in place
 * only after every layer passed, so nothing is ever made visible from a layer that is not the
 * one the lock names, or from a plan the layer does not back.
 *
 * Memory: a batch of files per layer being written and the next one being prepared; the plan
 * is read as it goes (it spills to disk past its budget).
 */
import { extractAvailable, LayerExtraction, type ExtractFile } from '../../native/extract.js';
import type { LayerEntry, LoadedModule, MergePlan, PlannedFile, StoreReader } from '../../store/index.js';
import type { TreeWriter } from './writer.js';

/** Layers read at once, each on a thread of libuv's pool. */
const AT_ONCE = 2;
/** A batch closes at this many files or bytes of content. */
const BATCH_FILES = 512;
const BATCH_BYTES = 8 << 20;

type BlobReader = StoreReader & Required<Pick<StoreReader, 'openLayerBlob'>>;

/** True when `store` can hand out its blobs and this process can read them natively. */
export function canExtract(store: StoreReader): store is BlobReader {
  return store.openLayerBlob !== undefined && extractAvailable();
}

interface Batch {
  files: ExtractFile[];
  entries: LayerEntry[];
  /** Per file, the skip to count when its chown is refused. */
  refused: Array<(() => void) | undefined>;
  bytes: number;
  last: boolean;
}

/**
 * Writes every file of `plan` that `layers` hold (not the embedded ones) into the writer's
 * tree. `progress` gets the bytes written after each batch. A failure anywhere rejects once
 * every session has stopped; the caller then discards the tree.
 */
export async function extractLayers(w: TreeWriter, store: BlobReader, layers: LoadedModule[], plan: MergePlan, progress: (bytes: number) => void): Promise<void> {
  const blobs = await Promise.all(layers.map((m) => store.openLayerBlob(m)));
  // The largest first, so the last to finish is a small one.
  const order = layers.map((_, i) => i).sort((a, b) => blobs[b]!.size - blobs[a]!.size);
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    for (let i = order.shift(); i !== undefined && failure === undefined; i = order.shift()) {
      try {
        await extractLayer(w, blobs[i]!, plan.files(i), progress, () => failure !== undefined);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(AT_ONCE, layers.length) }, worker));
  } finally {
    await Promise.all(blobs.map((b) => b.close()));
  }
  if (failure) throw failure.error;
}

async function extractLayer(
  w: TreeWriter,
  blob: Awaited<ReturnType<BlobReader['openLayerBlob']>>,
  planned: Iterable<PlannedFile>,
  progress: (bytes: number) => void,
  stopped: () => boolean,
): Promise<void> {
  const session = new LayerExtraction(blob.fd, w.root);
  const files = planned[Symbol.iterator]();
  let next = files.next();
  const nextBatch = (): Batch => {
    const b: Batch = { files: [], entries: [], refused: [], bytes: 0, last: false };
    while (!next.done && b.files.length < BATCH_FILES && b.bytes < BATCH_BYTES) {
      const { entry, contentPath } = next.value;
      const finish = w.plainFinish(entry);
      b.files.push({ tarPath: contentPath, path: entry.path, finish });
      b.entries.push(entry);
      b.refused.push(finish?.refused);
      b.bytes += entry.size;
      next = files.next();
    }
    b.last = next.done === true;
    return b;
  };
  try {
    let batch = nextBatch();
    for (;;) {
      const running = session.run(batch.files, batch.last);
      // The next batch is made while this one is written.
      const after = batch.last ? undefined : nextBatch();
      const r = await running;
      w.settleBatch(batch.entries, batch.refused, r, r.problem !== undefined);
      progress(batch.bytes);
      // A read that failed, a blob that is not a canonical tar, or the end: the store judges.
      if (batch.last || r.error !== undefined || r.problem !== undefined) {
        blob.check(r);
        return;
      }
      if (stopped()) return;
      batch = after!;
    }
  } finally {
    session.close();
  }
}

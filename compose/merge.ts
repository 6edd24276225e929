/**
 * The composer's merge: a stack's layers, read from the store, planned with the OCI
 * semantics of store/layer/merge.ts, plus the embedded metadata laid on top.
 */
import { comparePaths, fitHeapToPlan, LARGE_PLAN, LayerMerge, type LayerEntry, type LoadedModule, type MergePlan, type PlannedFile, type StoreReader } from '../store/index.js';
export type { MergePlan, PlannedEntry, PlannedFile } from '../store/index.js';
import type { AclIndexEntry, EmbeddedContent, EmbeddedFiles } from './embedded.js';

/**
 * Reads each layer's headers (bodies skipped) and plans the merged tree. `extra` is asked,
 * with the merged tree's ACLs, for entries to lay over everything (the embedded metadata);
 * they form the last layer, index `layers.length`. `fingerprints`: the plan fingerprints the
 * planned files of each layer of at most that many (MergePlan.layerFiles). Memory is bounded:
 * the plan spills to the store's scratch directory past its budget; the heap is fitted to a
 * large plan (store/heap.ts) as soon as the layers have given that many entries. Call
 * plan.dispose() when done.
 */
export async function planMerge(
  store: StoreReader,
  layers: LoadedModule[],
  extra?: (acls: Iterable<[string, AclIndexEntry]>, hasDir: (p: string) => boolean) => LayerEntry[],
  { fingerprints = 0 }: { fingerprints?: number } = {},
): Promise<MergePlan> {
  const merge = new LayerMerge({ tmpDir: await store.scratchDir(), large: { entries: LARGE_PLAN, reached: fitHeapToPlan } });
  try {
    for (const mod of layers) await merge.addLayer((first) => store.layerEntries(mod, { whiteoutsAndLinks: first }), mod.fullName);
    if (extra) {
      const entries = extra(aclEntries(merge), (p) => merge.isDir(p));
      await merge.addLayer(() => entries, 'strata metadata');
    }
    return merge.plan({ fingerprints });
  } catch (e) {
    merge.dispose();
    throw e;
  }
}

/** Every ACL of the merged tree, by path (each entry as its layer holds it), in the plan's order. */
function* aclEntries(merge: LayerMerge): Generator<[string, AclIndexEntry]> {
  for (const e of merge.aclEntries()) yield [e.path, { mode: e.mode, gid: e.gid, ...e.acl }];
}

/**
 * Streams the file contents an output of `plan` needs: every layer is read to its end, in
 * stack order (so each layer's digest is checked, and so the store can check the entry list
 * the plan was made from against the layer itself, even for a layer none of whose files is
 * used), and `onFile` is called with each wanted file's final entry, its body, which it must
 * drain before returning, and where in its layer the body is (LayerItem.offset). The body's
 * chunks are transient (StoreReader.readLayer): each must be copied or written before the next
 * is asked for. The plan's
 * files of a layer come in the layer's own order, so the two are joined as they stream. A
 * failure anywhere rejects before the walk ends: callers make their output visible only
 * after it resolved.
 *
 * `ahead` sees each planned file `depth` files before `onFile` gets it (in the same order), so
 * that work for it can start early (the sandbox creates files on other threads). A file seen
 * may never reach `onFile` only when the layer does not hold it, and then the walk fails.
 *
 * `placed`, asked before each layer, may answer that the output already has that layer's
 * files from elsewhere (an image writer's segment of the user's own earlier build): the layer
 * is then not read. It answers so only for what a verified read made.
 */
export async function forEachPlannedFile(
  store: StoreReader,
  layers: LoadedModule[],
  plan: MergePlan,
  onFile: (entry: LayerEntry, body: AsyncIterable<Uint8Array>, layer: number, offset: number) => Promise<void>,
  ahead?: { depth: number; see(file: PlannedFile): void },
  placed?: (layer: number) => Promise<boolean>,
): Promise<void> {
  for (let i = 0; i < layers.length; i++) {
    if (placed && (await placed(i))) continue;
    const wanted = (ahead ? lookahead(plan.files(i), ahead.depth, ahead.see) : plan.files(i))[Symbol.iterator]();
    let next = wanted.next();
    for await (const { entry, body, offset } of store.readLayer(layers[i]!, { transient: true })) {
      if (entry.type !== 'file') continue;
      while (!next.done && comparePaths(next.value.contentPath, entry.path) < 0) next = wanted.next();
      if (next.done || next.value.contentPath !== entry.path) continue;
      const { entry: final } = next.value;
      next = wanted.next();
      await onFile(final, body, i, offset);
    }
  }
}

/** `items` as they are, each shown to `see` `depth` items before it is yielded. */
function* lookahead<T>(items: Iterable<T>, depth: number, see: (t: T) => void): Generator<T> {
  const it = items[Symbol.iterator]();
  const window: T[] = [];
  let more = true;
  for (;;) {
    while (more && window.length <= depth) {
      const n = it.next();
      if (n.done) more = false;
      else {
        see(n.value);
        window.push(n.value);
      }
    }
    if (window.length === 0) return;
    yield window.shift()!;
  }
}

/** The embedded files (the plan's last layer), in `embedded`'s order, each with its final entry. */
export function embeddedPlanned(plan: MergePlan, layers: number, embedded: EmbeddedFiles): Array<{ entry: LayerEntry; content: EmbeddedContent }> {
  const finals = new Map([...plan.files(layers)].map((f) => [f.contentPath, f.entry]));
  return [...embedded.files].map(([p, content]) => ({ entry: finals.get(p)!, content }));
}

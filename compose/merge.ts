/**
 * The composer's merge: a stack's layers, read from the store, planned with the OCI
 * semantics of store/layer-merge.ts, plus the embedded metadata laid on top.
 */
import { applyLayer, emptyTree, flatten, hardLinkTargets, lookup, MergeNode, MergePlan, comparePaths, LayerEntry, type LoadedModule, type Store, type StoreReader } from '../store/index.js';
export type { MergePlan, PlannedEntry } from '../store/index.js';
import type { AclIndex } from './embedded.js';


/**
 * Reads each layer's headers (bodies skipped) and plans the merged tree. `extra` is asked,
 * with the merged tree's ACLs, for entries to lay over everything (the embedded metadata);
 * they form the last layer, index `layers.length`.
 */
export async function planMerge(
  store: StoreReader,
  layers: LoadedModule[],
  extra?: (acls: AclIndex, hasDir: (p: string) => boolean) => LayerEntry[],
): Promise<MergePlan> {
  const root = emptyTree();
  const linkTargets: Array<Map<string, LayerEntry>> = [];
  for (let i = 0; i < layers.length; i++) {
    const entries = await store.layerEntries(layers[i]!);
    linkTargets.push(hardLinkTargets(entries));
    applyLayer(root, i, entries, layers[i]!.fullName);
  }
  if (extra) {
    const entries = extra(aclIndex(root), (p) => lookup(root, p)?.entry.type === 'dir');
    applyLayer(root, layers.length, entries, 'strata metadata');
    linkTargets.push(new Map());
  }
  return flatten(root, linkTargets);
}

/** Every ACL in the tree, by path. */
export function aclIndex(root: MergeNode): AclIndex {
  const entries: AclIndex['entries'] = {};
  const walk = (n: MergeNode, p: string) => {
    if (n.entry.acl && (n.entry.acl.access || n.entry.acl.default)) entries[p] = { mode: n.entry.mode, gid: n.entry.gid, ...n.entry.acl };
    if (!n.children) return;
    for (const name of [...n.children.keys()].sort(comparePaths)) walk(n.children.get(name)!, p === '.' ? name : `${p}/${name}`);
  };
  walk(root, '.');
  return { aclVersion: 1, entries };
}


/** Bytes of file content an output of `plan` writes (embedded metadata included). */
export function plannedBytes(plan: MergePlan): number {
  let n = 0;
  for (const { entry } of plan.entries) if (entry.type === 'file') n += entry.size;
  return n;
}

/**
 * Streams the file contents an output of `plan` needs: every layer is read to its end, in
 * stack order (so each layer's digest is checked, and so the store can check the entry list
 * the plan was made from against the layer itself, even for a layer none of whose files is
 * used), and `onFile` is called with the final path of each wanted file, its body, which it
 * must drain before returning, and where in its layer the body is (LayerItem.offset). A failure anywhere rejects before the walk ends: callers make
 * their output visible only after it resolved.
 */
export async function forEachPlannedFile(
  store: StoreReader,
  layers: LoadedModule[],
  plan: MergePlan,
  onFile: (dest: string, body: AsyncIterable<Uint8Array>, layer: number, offset: number) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < layers.length; i++) {
    const wanted = plan.content[i]!;
    for await (const { entry, body, offset } of store.readLayer(layers[i]!)) {
      const dest = entry.type === 'file' ? wanted.get(entry.path) : undefined;
      if (dest !== undefined) await onFile(dest, body, i, offset);
    }
  }
}

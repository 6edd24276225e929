/**
 * The one tree writer (sandbox and unsquash): a target no one else can redirect
 * (target.ts), the writer with its errno policy, skip vocabulary and ACL split (writer.ts),
 * and an image read into a tree (image.ts).
 */
import type { LayerEntry } from '../../store/index.js';
import { openTarget } from './target.js';
import { skipWarnings, TreeWriter, type WriterOptions } from './writer.js';

export { isPrivateName, openTarget, type TreeTarget } from './target.js';
export { skipWarnings, TreeWriter, type SkipKind, type WriterOptions } from './writer.js';
export { canExtract, extractLayers } from './layers.js';
export { DirList } from './dirs.js';

export interface TreeOptions extends WriterOptions {
  /** Replace a non-empty DIR (its old contents go only once the new tree is in place). */
  force?: boolean;
  /** Paths DIR must not hold when `force` would empty it (the store). */
  keep?: string[];
}

export interface TreeResult {
  /** Skip kind → count (see writer.ts). */
  skipped: Record<string, number>;
  /** One line each, for the user: what could not be applied, what was narrowed. */
  warnings: string[];
}

/**
 * Builds a tree at `dir`: opens the target (checks, private directory), lets `fill` write every
 * entry but the root through the writer, then applies the root entry `fill` returns and puts
 * the tree in place. Any failure removes the private directory and leaves `dir` as it was.
 */
export async function buildTree<T extends object>(
  dir: string,
  opts: TreeOptions,
  fill: (w: TreeWriter) => Promise<{ root: LayerEntry; value: T }>,
): Promise<T & TreeResult> {
  const target = openTarget(dir, opts);
  let w: TreeWriter | undefined;
  try {
    w = new TreeWriter(target.root, opts);
    const { root, value } = await fill(w);
    w.close();
    w.finishRoot(root, target.place());
    const warnings = [...skipWarnings(w.skipped, dir), ...target.commit()];
    return { ...value, skipped: w.skipped, warnings };
  } catch (e) {
    w?.close();
    target.abort();
    throw e;
  }
}

/**
 * The directories of a tree being built, kept for the end: a directory's metadata (its mode may
 * shut its owner out; its mtime changes with every entry made in it) is applied once everything
 * below it is made, deepest first (TreeWriter.finishDirs). Held in memory up to the sorter's
 * budget and spilled past it, so a tree of a million directories costs no more memory than a
 * small one.
 */
import { comparePaths, decodeEntry, encodeEntry, entrySize, SpillSorter, type LayerEntry, type RecordCodec } from '../../store/index.js';

const codec: RecordCodec<LayerEntry> = {
  encode: (e) => encodeEntry(e),
  decode: (b) => decodeEntry(b).entry,
  size: entrySize,
};

export class DirList {
  private readonly sorter: SpillSorter<LayerEntry>;

  /** `scratchDir` takes the spill files (a directory strata owns). */
  constructor(scratchDir: string) {
    // Reversed path order is deepest first: every directory after everything below it.
    this.sorter = new SpillSorter<LayerEntry>({ compare: (a, b) => comparePaths(b.path, a.path), codec, dir: scratchDir });
  }

  push(e: LayerEntry): void {
    this.sorter.push(e);
  }

  /** The directories, deepest first. */
  deepestFirst(): Iterable<LayerEntry> {
    return this.sorter.sorted();
  }

  dispose(): void {
    this.sorter.dispose();
  }
}

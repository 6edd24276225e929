/**
 * `strata unsquash IMAGE DIR`: extracts an image (SquashFS or EROFS, told by its magic) and puts
 * back what SquashFS could not hold (an EROFS image holds it already; its acl.json agrees) —
 * each path's POSIX ACLs and original mode (and owning group, when the image changed it),
 * from the image's /.strata/acl.json, in the same pass through the one tree writer: nothing
 * is looked up or changed by path afterwards.
 *
 * Memory: acl.json is read as it streams and sorted into the image's walk order through spill
 * files (a licensed tree has an ACL on every path); the walk asks for each path in that order.
 */
import { tmpdir } from 'node:os';
import { aclFromText } from '../native/acl.js';
import { comparePaths, entryRecCodec, fitHeapToPlan, LARGE_PLAN, readEntriesDocument, SpillSorter, type EntryRec } from '../store/index.js';
import { StrataError } from './errors.js';
import { IMAGE_ERR } from './image/errors.js';
import { openImage, q } from './image/index.js';
import { checkPath, extractImage, type Restore, type RestoreLookup } from './tree/image.js';

export interface UnsquashResult {
  entries: number;
  /** Paths whose ACLs were set (the rest had a mode narrowed instead: `skipped`). */
  acls: number;
  skipped: Record<string, number>;
  warnings: string[];
}

export async function unsquash(image: string, dir: string): Promise<UnsquashResult> {
  const img = await openImage(image);
  if (img.superblock.inodes > LARGE_PLAN) fitHeapToPlan();
  // The spill files of the ACL index and the directory list (store/spill.ts: unlinked once
  // open, so nothing is left behind however the process ends).
  const scratchDir = tmpdir();
  let restore: AclIndexReader | undefined;
  try {
    const acl = await img.stat('.strata/acl.json');
    if (acl) {
      if (acl.type !== 'file') throw new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json is not a strata ACL index`);
      restore = await AclIndexReader.read(image, img.openFile(acl), scratchDir);
    }
    const r = await extractImage(img, dir, { restore, scratchDir });
    // A path whose ACLs could not be set (a mode narrowed instead, skipped once) was not restored.
    const notSet = (r.skipped['POSIX ACLs'] ?? 0) + (r.skipped['unmapped ACLs'] ?? 0);
    return { entries: r.entries, acls: Math.max(0, r.acls - notSet), skipped: r.skipped, warnings: r.warnings };
  } finally {
    restore?.dispose();
    await img.close();
  }
}

const HINT = 'the image was altered or not written by strata';

/**
 * /.strata/acl.json as untrusted input: every path canonical, every mode an integer in
 * 0..0o7777, every ACL text parseable, a gid (optional) an id, no path twice. Anything else is
 * ERR_IMAGE_CORRUPT, before DIR is touched. A path that is not an entry of the image is found
 * as the walk passes where it would be, and fails the extraction (DIR is left as it was).
 */
class AclIndexReader implements RestoreLookup {
  private cursor: Generator<EntryRec> | undefined;
  private cur: IteratorResult<EntryRec> | undefined;

  private constructor(
    private readonly image: string,
    private readonly sorter: SpillSorter<EntryRec>,
  ) {}

  /** Reads the index from its bytes; `scratchDir` takes the spill files. */
  static async read(image: string, chunks: AsyncIterable<Uint8Array>, scratchDir: string): Promise<AclIndexReader> {
    const sorter = new SpillSorter<EntryRec>({ compare: (a, b) => comparePaths(a[0], b[0]), codec: entryRecCodec, dir: scratchDir });
    const reader = new AclIndexReader(image, sorter);
    try {
      const notIndex = (why: string) => new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json is not a strata ACL index (${why})`);
      const { hasEntries } = await readEntriesDocument(chunks, 'entries', notIndex, (p, raw) => {
        checkPath(p, `${image}: /.strata/acl.json`);
        sorter.push([p, JSON.stringify(reader.restoreOf(p, raw as Record<string, unknown>))]);
      });
      if (!hasEntries) throw notIndex('no "entries"');
      return reader;
    } catch (e) {
      reader.dispose();
      throw e;
    }
  }

  private bad(p: string, why: string): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.image}: /.strata/acl.json names ${q(p)} ${why}`, { hint: HINT });
  }

  private restoreOf(p: string, e: Record<string, unknown>): Restore {
    const mode = e.mode;
    if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw this.bad(p, 'with an invalid mode');
    const r: Restore = { mode };
    for (const k of ['access', 'default'] as const) {
      if (e[k] === undefined) continue;
      if (typeof e[k] !== 'string') throw this.bad(p, `with an invalid ${k} ACL`);
      try {
        aclFromText(e[k] as string);
      } catch {
        throw this.bad(p, `with an invalid ${k} ACL`);
      }
      r[k] = e[k] as string;
    }
    if (e.gid !== undefined) {
      if (typeof e.gid !== 'number' || !Number.isInteger(e.gid) || e.gid < 0 || e.gid > 0xfffffffe) throw this.bad(p, 'with an invalid group');
      r.gid = e.gid;
    }
    return r;
  }

  /** The cursor's record: the first path not yet passed, in walk order (undefined at the end). */
  private head(): EntryRec | undefined {
    if (this.cursor === undefined) {
      this.cursor = this.sorter.sorted();
      this.cur = this.cursor.next();
    }
    return this.cur!.done ? undefined : this.cur!.value;
  }

  lookup(path: string): Restore | undefined {
    const rec = this.head();
    if (rec !== undefined && comparePaths(rec[0], path) < 0) throw this.notAnEntry(rec[0]);
    if (rec === undefined || rec[0] !== path) return undefined;
    this.cur = this.cursor!.next();
    if (this.head()?.[0] === path) throw this.bad(path, 'twice');
    return JSON.parse(rec[1]) as Restore;
  }

  finish(): void {
    const rec = this.head();
    if (rec !== undefined) throw this.notAnEntry(rec[0]);
  }

  private notAnEntry(p: string): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.image}: /.strata/acl.json names ${q(p)}, which is not an entry of the image`, { hint: HINT });
  }

  dispose(): void {
    this.cursor?.return(undefined);
    this.sorter.dispose();
  }
}

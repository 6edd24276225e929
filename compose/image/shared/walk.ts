/**
 * The readers' walk, one loop for both formats: every name of an image, the root first, then
 * depth first in listing order, which is the order of canonical paths (comparePaths: both
 * readers refuse a listing out of byte order). The first name of an inode with more than one
 * link is given as itself; each later name as a hard link to that first name.
 *
 * Which name came first is known without memory per link. While no name with a link count
 * above one has been met, nothing is kept. At the first one, the rest of the tree is read
 * ahead once (the survey: the listings, and of each inode its type and link count) and each
 * such name goes into a sorter (store/spill.ts) as (inode, place among them, path). Sorted by
 * inode, each inode's names come in walk order, its first name leading; every later name goes
 * into a second sorter as (place, inode, first name), sorted by place. The walk reads that
 * stream beside itself: a linked name whose place is the next record's is a hard link to the
 * record's first name (its inode checked against the record's: only an image changed under
 * the walk differs), any other is the first of its inode. Memory: the sorters' buffers, and
 * while the survey runs a copy of the walk's directory stack and of its directories' numbers.
 * Listings are read as the walk goes, never held whole: an open directory is an iteration of
 * its listing, and the survey reads each open directory's listing again from its start,
 * skipping what the walk has had of it (a directory of a million names held as entries took
 * unsquash to 335 MiB).
 * Keyed by the place in the walk, not by path, the answer is the one a Map of first names
 * gives for any image, sound or not (a link count that does not match the names found, an
 * inode number two inodes claim).
 *
 * A survey that fails (a damaged listing or inode past the point the walk has reached, a
 * cycle, a spill file that cannot be written) is dropped: the walk goes on with a Map of
 * first names, as before, and meets the same failure at the same entry with the same error.
 * An image without such names costs nothing: no survey, no sorter.
 */
import { tmpdir } from 'node:os';
import { SpillSorter, type RecordCodec } from '../../../store/index.js';

export interface WalkOptions {
  /** Called for each entry walk() leaves out: what ('socket') and its path. */
  onSkip?(what: string, path: string): void;
  /** Where the hard-link sorters spill (store/spill.ts: files unlinked once open); without it, the system's tmp. */
  scratchDir?: string;
  /** Called once the walk has read ahead for hard links (the survey): whether it could, or goes on with a Map of first names. */
  onSurvey?(ok: boolean): void;
}

/** What an inode is to the walk: a directory walked into, a socket left out, or a name. */
export const KIND = { OTHER: 0, DIR: 1, SOCKET: 2 } as const;

/**
 * A reader as the walk reads it: `D` a listing's entry, `I` a checked inode, `E` what the
 * walk yields. Every read checks what it reads and throws the reader's one-line error.
 */
export interface WalkSource<D, I, E> {
  /** The root inode, checked to be a directory. */
  root(): Promise<I>;
  /**
   * A directory's entries in stored order (sorted, checked as they are read), a batch at a
   * time (as they are stored: a header's run, a block): each iteration reads the listing from
   * its start, as it goes, so a wide directory is never held whole.
   */
  listing(dir: I, path: string): AsyncIterable<D[]>;
  name(de: D): string;
  /** The inode an entry names, checked against what the entry says of it. */
  inode(de: D, path: string): Promise<I>;
  /**
   * The survey's look at an entry, cheaper than inode(): -1 when it names a directory (then
   * read with inode()), 0 a socket, else its inode's link count, the number being key(de).
   * Where inode() accepts the entry both tell the same from the same bytes; where it refuses
   * it the walk stops there, and what this said of it does not matter.
   */
  links(de: D): Promise<number>;
  key(de: D): number;
  kind(ino: I): number;
  /** The inode's number (the same for all its names) and link count. */
  number(ino: I): number;
  nlink(ino: I): number;
  /** The error for a directory met a second time. */
  cycle(path: string, ino: I): Error;
  /** The entry of `path`; with `linkTo`, a hard link to that earlier name. */
  entry(path: string, ino: I, linkTo?: string): Promise<E>;
  /** What a failure of the walk is thrown as. */
  error(e: unknown): unknown;
}

/**
 * An open directory of the walk: its listing, read a batch at a time as the walk goes, the
 * batch at hand, and how many entries it gave (`skip`: entries still to pass over, for a fork).
 */
interface Frame<D> {
  path: string;
  listing: AsyncIterable<D[]>;
  it: AsyncIterator<D[]>;
  batch: D[];
  i: number;
  taken: number;
  skip: number;
}

function open<D>(path: string, listing: AsyncIterable<D[]>, skip = 0): Frame<D> {
  return { path, listing, it: listing[Symbol.asyncIterator](), batch: [], i: 0, taken: skip, skip };
}

/** The next entry of a depth-first walk over `frames`, leaving its directory on top; undefined when all are done. */
async function nextIn<D>(frames: Frame<D>[]): Promise<D | undefined> {
  while (frames.length > 0) {
    const top = frames[frames.length - 1]!;
    if (top.i < top.batch.length) {
      top.taken++;
      return top.batch[top.i++];
    }
    const r = await top.it.next();
    if (r.done) {
      frames.pop();
      continue;
    }
    top.batch = r.value;
    top.i = Math.min(top.skip, top.batch.length);
    top.skip -= top.i;
  }
  return undefined;
}

/** `f` again, on an iteration of its own positioned where `f` is: its listing read again from the start, the entries `f` gave passed over. */
function fork<D>(f: Frame<D>): Frame<D> {
  return open(f.path, f.listing, f.taken);
}

/** Ends the iterations of `frames` (a walk or survey that stops before their end). */
async function closeAll<D>(frames: Frame<D>[]): Promise<void> {
  for (const f of frames.splice(0)) await f.it.return?.(undefined)?.catch(() => undefined);
}

/** The path of `name` in the directory on top of `frames`. */
function pathIn<D>(frames: Frame<D>[], name: string): string {
  const dir = frames[frames.length - 1]!.path;
  return dir === '.' ? name : `${dir}/${name}`;
}

/** Every entry of the image in walk order (see the file comment). */
export async function* walkImage<D, I, E>(src: WalkSource<D, I, E>, opts: WalkOptions = {}): AsyncGenerator<E> {
  const links = new FirstNames(opts.scratchDir);
  const stack: Frame<D>[] = [];
  try {
    const root = await src.root();
    yield await src.entry('.', root);
    const seenDirs = new Set<number>([src.number(root)]);
    stack.push(open('.', src.listing(root, '.')));
    for (let de = await nextIn(stack); de !== undefined; de = await nextIn(stack)) {
      const path = pathIn(stack, src.name(de));
      const ino = await src.inode(de, path);
      const kind = src.kind(ino);
      if (kind === KIND.DIR) {
        const n = src.number(ino);
        if (seenDirs.has(n)) throw src.cycle(path, ino);
        seenDirs.add(n);
        yield await src.entry(path, ino);
        stack.push(open(path, src.listing(ino, path)));
        continue;
      }
      if (kind === KIND.SOCKET) {
        opts.onSkip?.('socket', path);
        continue;
      }
      if (src.nlink(ino) > 1) {
        if (!links.started) {
          const ok = await links.survey(src, path, src.number(ino), stack, seenDirs);
          opts.onSurvey?.(ok);
        }
        const first = links.first(path, src.number(ino));
        if (first !== undefined) {
          yield await src.entry(path, ino, first);
          continue;
        }
      }
      yield await src.entry(path, ino);
    }
  } catch (e) {
    throw src.error(e);
  } finally {
    await closeAll(stack);
    links.dispose();
  }
}

/** A linked name in a sorter: its inode, its place among the linked names, and a path. */
interface Placed {
  ino: number;
  seq: number;
  path: string;
}

/** `f64 ino, f64 seq, UTF-8 path`. */
const placedCodec: RecordCodec<Placed> = {
  encode: (r) => {
    const b = Buffer.allocUnsafe(16 + Buffer.byteLength(r.path));
    b.writeDoubleLE(r.ino, 0);
    b.writeDoubleLE(r.seq, 8);
    b.write(r.path, 16);
    return b;
  },
  decode: (b) => ({ ino: b.readDoubleLE(0), seq: b.readDoubleLE(8), path: b.toString('utf8', 16) }),
  size: (r) => 64 + 2 * r.path.length,
};

/**
 * Which linked names are an inode's first, for a walk that asks in its order (first(), once
 * per name whose link count is above one). Through the survey's sorted records, or a Map of
 * first names when the survey failed.
 */
class FirstNames {
  started = false;
  /** The later names in walk order, each with its inode and first name (`path`). */
  private later: SpillSorter<Placed> | undefined;
  private cursor: Generator<Placed> | undefined;
  private next: Placed | undefined;
  private seq = 0;
  /** The walk's Map of first names, when the survey could not be made. */
  private map: Map<number, string> | undefined;
  constructor(private readonly scratchDir: string | undefined) {}

  /**
   * Reads the tree ahead from the name the walk has just met (`path`, inode `ino`; the walk's
   * `stack` and `seenDirs` as they are), and sorts the later names. False when it could not
   * (then a Map of first names answers).
   */
  async survey<D, I, E>(src: WalkSource<D, I, E>, path: string, ino: number, stack: Frame<D>[], seenDirs: Set<number>): Promise<boolean> {
    this.started = true;
    let names: SpillSorter<Placed> | undefined;
    let frames: Frame<D>[] = [];
    try {
      const dir = this.scratchDir ?? tmpdir();
      names = new SpillSorter<Placed>({ compare: (a, b) => a.ino - b.ino || a.seq - b.seq, codec: placedCodec, dir });
      let seq = 0;
      names.push({ ino, seq: seq++, path });
      const seen = new Set(seenDirs);
      frames = stack.map(fork);
      for (let de = await nextIn(frames); de !== undefined; de = await nextIn(frames)) {
        const links = await src.links(de);
        if (links === 1 || links === 0) continue;
        const p = pathIn(frames, src.name(de));
        if (links > 1) {
          names.push({ ino: src.key(de), seq: seq++, path: p });
          continue;
        }
        const node = await src.inode(de, p);
        if (src.kind(node) !== KIND.DIR) throw new Error(`${p} is a directory to links() only`);
        const n = src.number(node);
        if (seen.has(n)) throw src.cycle(p, node);
        seen.add(n);
        frames.push(open(p, src.listing(node, p)));
      }
      const later = new SpillSorter<Placed>({ compare: (a, b) => a.seq - b.seq, codec: placedCodec, dir });
      this.later = later;
      let group = -1;
      let first = '';
      for (const r of names.sorted()) {
        if (r.ino !== group) {
          group = r.ino;
          first = r.path;
        } else later.push({ ino: r.ino, seq: r.seq, path: first });
      }
      this.cursor = later.sorted();
      this.next = this.cursor.next().value;
      return true;
    } catch {
      this.dispose();
      this.map = new Map();
      return false;
    } finally {
      await closeAll(frames);
      names?.dispose();
    }
  }

  /** The first name of inode `ino` when `path` is a later one; undefined when `path` is its first. */
  first(path: string, ino: number): string | undefined {
    if (this.map) {
      const first = this.map.get(ino);
      if (first === undefined) this.map.set(ino, path);
      return first;
    }
    const seq = this.seq++;
    const r = this.next;
    if (r === undefined || r.seq !== seq) return undefined;
    // The survey read the same bytes: only an image changed under the walk differs here.
    if (r.ino !== ino) throw new Error(`${path} is not the name read ahead at its place: the image changed while it was read`);
    this.next = this.cursor!.next().value;
    return r.path;
  }

  /** Frees the spill files. Safe to call more than once. */
  dispose(): void {
    this.cursor?.return(undefined);
    this.cursor = undefined;
    this.next = undefined;
    this.later?.dispose();
    this.later = undefined;
  }
}

/**
 * An async iterator that may also hand out an item it holds already, without a promise: null
 * at the end, undefined when only next() can give it (the tar reader's entries and bodies).
 * A map keeps it: an entry whose headers are buffered goes from the reader to the canonical
 * tar without a promise.
 */
export type NowIterator<T> = AsyncIterator<T> & { nextNow?(): T | null | undefined };

/**
 * An async iterable with a function applied to each item, one item out for each item in, as a
 * plain iterator rather than an async generator.
 *
 * The import of a plain tar passes each entry through two such steps (the tar's headers become
 * a source's items, the items the layer's canonical records) between the reader and the
 * canonical tar. As async generators, each step cost a queued request, a resumption and
 * promises of its own on top of the source's: about 0.12 s and 300 bytes of garbage per entry
 * at a million entries. Here a step is the source's promise and one `then`, and a map over a
 * map is one step: the functions composed over the first one's source (another `then` and
 * result per entry was a sixth of the import's garbage). A source's `nextNow` is kept: an item
 * it holds already is mapped without a promise.
 *
 * The protocol is `for await`'s: the source is closed (its `return()`) when the consumer stops
 * early and when `f` throws; `f`'s error is what the consumer gets. An error of the source
 * itself passes through (a source that threw is done).
 */
export function mapItems<A, B>(source: AsyncIterable<A>, f: (item: A) => B): AsyncIterable<B> {
  if (source instanceof Mapped) return (source as Mapped<unknown, A>).map(f);
  return new Mapped(source, f);
}

/** `source` with `f` applied to each item. */
class Mapped<A, B> implements AsyncIterable<B> {
  constructor(
    private readonly source: AsyncIterable<A>,
    private readonly f: (item: A) => B,
  ) {}

  /** This map followed by `g`, as one step over the same source. (Not named `then`: that would make a map thenable.) */
  map<C>(g: (item: B) => C): Mapped<A, C> {
    const f = this.f;
    return new Mapped(this.source, (item: A) => g(f(item)));
  }

  [Symbol.asyncIterator](): NowIterator<B> {
    const it: NowIterator<A> = this.source[Symbol.asyncIterator]();
    const f = this.f;
    const close = async (): Promise<void> => {
      await it.return?.();
    };
    const fail = (e: unknown): Promise<never> =>
      close().then(
        () => Promise.reject(e),
        () => Promise.reject(e),
      );
    /** `f` threw in nextNow(): next() closes the source and gives the error. */
    let failed = false;
    let failure: unknown;
    const mapped: NowIterator<B> = {
      next: () => {
        if (failed) {
          failed = false;
          return fail(failure);
        }
        return it.next().then((r): IteratorResult<B> | Promise<IteratorResult<B>> => {
          if (r.done) return { value: undefined, done: true };
          try {
            return { value: f(r.value), done: false };
          } catch (e) {
            return fail(e);
          }
        });
      },
      return: async (): Promise<IteratorResult<B>> => {
        failed = false;
        await close();
        return { value: undefined, done: true };
      },
    };
    if (it.nextNow !== undefined) {
      mapped.nextNow = (): B | null | undefined => {
        if (failed) return undefined;
        const item = it.nextNow!();
        if (item === null) return null;
        if (item === undefined) return undefined;
        try {
          return f(item);
        } catch (e) {
          failed = true;
          failure = e;
          return undefined;
        }
      };
    }
    return mapped;
  }
}

/**
 * The iterator `for await` would take of `source`, as a NowIterator: a plain iterable's items
 * are all held already.
 */
export function nowIterator<T>(source: Iterable<T> | AsyncIterable<T>): NowIterator<T> {
  if (Symbol.asyncIterator in source) return source[Symbol.asyncIterator]();
  const it = source[Symbol.iterator]();
  return {
    nextNow: (): T | null => {
      const r = it.next();
      return r.done === true ? null : r.value;
    },
    next: async (): Promise<IteratorResult<T>> => it.next(),
    return: async (): Promise<IteratorResult<T>> => it.return?.() ?? { value: undefined, done: true },
  };
}

/**
 * The items of `batches`, one at a time, as a NowIterator: the rest of a batch comes without a
 * promise, only the next batch through one. A source that reads in chunks (an entry list's
 * lines, a MiB at a time) yields what each chunk holds; as an async generator of single
 * items, each one cost a suspension and a promise of its own. Closing the items closes the
 * batches.
 */
export function flatItems<T>(batches: AsyncIterable<readonly T[]>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator](): NowIterator<T> {
      const it = batches[Symbol.asyncIterator]();
      let batch: readonly T[] = [];
      let at = 0;
      let ended = false;
      return {
        nextNow: (): T | null | undefined => (at < batch.length ? batch[at++]! : ended ? null : undefined),
        next: async (): Promise<IteratorResult<T>> => {
          while (at === batch.length && !ended) {
            const r = await it.next();
            if (r.done === true) ended = true;
            else {
              batch = r.value;
              at = 0;
            }
          }
          return at < batch.length ? { value: batch[at++]!, done: false } : { value: undefined, done: true };
        },
        return: async (): Promise<IteratorResult<T>> => {
          batch = [];
          if (!ended) {
            ended = true;
            await it.return?.();
          }
          return { value: undefined, done: true };
        },
      };
    },
  };
}

/**
 * The next item of `it`: at once when it holds one (nextNow), else through next(); null at the
 * end. Await only a promise: `let x = nextItem(it); if (x instanceof Promise) x = await x;`
 * (awaiting a plain value would cost the turn of the microtask queue nextNow saves).
 */
export function nextItem<T>(it: NowIterator<T>): T | null | Promise<T | null> {
  const now = it.nextNow?.();
  return now !== undefined ? now : it.next().then((r) => (r.done === true ? null : r.value));
}

/**
 * Calls `f` with each item of `source` in order, as `for await` would, but an item the source
 * holds already (nextNow) costs no promise. The source is closed when `f` throws.
 */
export async function forEachItem<T>(source: Iterable<T> | AsyncIterable<T>, f: (item: T) => void): Promise<void> {
  const it = nowIterator(source);
  let done = false;
  try {
    for (;;) {
      let item = nextItem(it);
      if (item instanceof Promise) item = await item;
      if (item === null) {
        done = true;
        return;
      }
      f(item);
    }
  } finally {
    if (!done) await it.return?.();
  }
}

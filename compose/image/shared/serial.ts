/**
 * The image writers' calls (addFile, beginGroup) run one after another in call order, even
 * when their callers do not await them, and the first failure fails the writer: every later
 * call rejects with it, and finish() throws it.
 */
export class SerialCalls {
  private last: Promise<void> = Promise.resolve();
  private error: { e: unknown } | undefined;

  /** `accepting` throws when the writer takes no more calls (finished, aborted). */
  constructor(private readonly accepting: () => void) {}

  /** Throws the first failure, if there was one. */
  throwIfFailed(): void {
    if (this.error) throw this.error.e;
  }

  /** Records `e` as the writer's failure unless there already is one. */
  fail(e: unknown): void {
    this.error ??= { e };
  }

  /** Runs `work` after every call before it; its failure becomes the writer's. */
  run<T>(work: () => Promise<T>): Promise<T> {
    try {
      this.throwIfFailed();
      this.accepting();
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.last.then(async () => {
      this.throwIfFailed();
      try {
        return await work();
      } catch (e) {
        this.fail(e);
        throw e;
      }
    });
    this.last = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Resolves once every call made so far has settled. */
  settled(): Promise<void> {
    return this.last;
  }
}

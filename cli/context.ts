/**
 * What every command handler is given: the global options, the store (opened on first use
 * and closed when the command ends), the printer, progress bars and registry transfer hooks.
 * Handlers return a Result (cli/output.ts) and print nothing themselves, so they can be called
 * without a subprocess.
 */
import * as path from 'node:path';
import { openStore, storePath, type Store, type TransferHooks } from '../store/index.js';
import { Printer, type GlobalOptions } from './output.js';
import { progress, type Progress } from './progress.js';

export class Context {
  readonly out: Printer;
  private opened: Store | undefined;

  constructor(
    readonly options: () => GlobalOptions,
    readonly cwd: string = process.cwd(),
  ) {
    this.out = new Printer(options);
  }

  /**
   * Where the stack's files (strata.json, strata.lock) are: --stack DIR, else $STRATA_STACK,
   * else the working directory.
   */
  get stackDir(): string {
    return this.resolve(this.options().stack ?? (process.env.STRATA_STACK || '.'));
  }

  /** A path the user typed, made absolute against the working directory. */
  resolve(p: string): string {
    return path.resolve(this.cwd, p);
  }

  /** The store path named by --store (repeatable) / $STRATA_PATH / $STRATA_STORE / the default, opened once. */
  async store(): Promise<Store> {
    if (!this.opened) {
      const { dirs, implicit } = storePath(this.options().store ?? []);
      this.opened = await openStore(dirs, { implicit, onWait: (m) => this.out.note(`strata: ${m}`) });
    }
    return this.opened;
  }

  async close(): Promise<void> {
    await this.opened?.close();
    this.opened = undefined;
  }

  /** A progress bar on a terminal; nothing with -q, --json or when not a terminal. */
  progress(label: string): Progress {
    return progress(label, !this.out.quiet && !this.out.json);
  }

  /** Progress bars and retry notes for registry transfers (push, pull, and fetches of missing blobs). */
  transfer(): TransferHooks {
    let bar: Progress | undefined;
    let total = 0;
    return {
      onModule: ({ fullName, action, total: t }) => {
        bar?.done();
        total = t;
        bar = this.progress(`${action === 'push' ? 'pushing' : 'pulling'} ${fullName}`);
      },
      onProgress: (done) => bar?.update(done, total),
      onModuleDone: () => {
        bar?.done();
        bar = undefined;
      },
      onRetry: (i) => {
        bar?.done();
        this.out.note(`strata: ${i.what}: ${i.reason}; retrying in ${(i.delayMs / 1000).toFixed(1)} s (try ${i.attempt + 1})`);
      },
    };
  }
}

/**
 * A pool of worker threads that run jobs of one kind, for the image writers' compression.
 *
 * The pool knows nothing of the jobs. A *job module* (given by URL) exports
 *
 *   createJobHandler(config: unknown): JobHandler<Job, Result>
 *
 * which each worker calls once with the pool's `config` (plain data, copied to every
 * thread); `run(job)` then answers each job with its result and the buffers to transfer back.
 * `WorkerPool.run` returns a promise per job: the caller decides the order results are used
 * in (the writers write in submission order, so output never depends on the number of threads
 * or on which finished first). Jobs go to the least-loaded worker that has loaded its job
 * module (one still loading only when none has). One worker starts with the pool; another
 * when a job finds every loaded one busy and one of them behind (busy most of its recent
 * time: BUSY_SHARE), up to `threads`, without waiting for the ones still loading (on a machine
 * of many cores the threads load together, not one after another): a build with little to
 * compress loads one thread, not all (a warm build of a small stack compresses only its own
 * /.strata files; a re-build after one module changed finds most blocks in the block cache,
 * which one thread answers as fast as they come).
 *
 * Jobs are posted in batches: those submitted before the event loop next turns go to their
 * worker in one message, and the worker answers in one message what it answered within a
 * millisecond (quick jobs: cache hits) and slower jobs one by one. Every message wakes a
 * thread, and on a virtual machine a wake-up costs tens of microseconds: per 128 KiB block
 * that was the largest single cost on the main thread of a warm re-squash.
 *
 * Ownership: buffers listed in `transfer` move to the worker (do not touch them afterwards);
 * the handler may transfer buffers back in the same way. Idle workers do not keep the process
 * alive. `close()` lets every handler release its files (`JobHandler.close`) and waits for the
 * threads to exit.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

export interface JobHandler<J, R> {
  /** Answers one job; a throw becomes a rejected `WorkerPool.run` promise (its message kept). */
  run(job: J): { result: R; transfer?: ArrayBuffer[] };
  /** Called once when the pool closes. */
  close?(): void;
}

export interface PoolOptions {
  /** URL (href) of the job module. */
  module: string;
  /** Passed to the module's createJobHandler in every worker. */
  config: unknown;
  threads: number;
  /** What the jobs are, for messages ("SquashFS block compression"). */
  what: string;
}

type Reply<R> = { id: number; ok: true; result: R } | { id: number; ok: false; message: string };
/**
 * A worker's answers, with the time (ms) it spent answering them and, before that, waiting
 * for work since its last message: what the pool judges its load by (BUSY_SHARE).
 */
interface Answers<R> {
  replies: Reply<R>[];
  busy: number;
  idle: number;
}
interface Envelope<J> {
  id: number;
  job: J;
}

/**
 * The resource limits of the pool's threads: a small young generation. By default each thread
 * grows it to 16 MiB or more, for threads that hold little but short-lived buffers; on the
 * bench's cold zstd squash (two compression workers and, then, a hashing thread) the limit took
 * peak RSS from 312 to about 270 MiB at the same speed.
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 2 };

/** A worker answering a batch sends what it has once this long has passed since it last sent. */
const REPLY_AFTER_MS = 1;

/**
 * A worker is behind when it is busy at least BUSY_SHARE of its recent time (a moving
 * average over about BUSY_WINDOW_MS, once it has answered BUSY_AFTER_JOBS jobs): it then has
 * the next batch waiting as it ends one, and another thread would share the work. A worker
 * that waits for its batches has a writer that cannot keep it busy, and another thread, which
 * takes 0.1–0.3 s of a core to load, would only take that core from the writer: a re-squash
 * of the bench stack after one module changed, whose blocks one thread finds in the block
 * cache as fast as they come, took 2.37 s with one thread against 2.57 s with two (5 pairs).
 * Measured by the worker, so a main thread busy elsewhere, which leaves answers waiting in
 * its queue, does not count; the first jobs (the first write of a pack, code not yet
 * compiled) do not decide alone.
 */
const BUSY_SHARE = 0.8;
const BUSY_WINDOW_MS = 50;
const BUSY_AFTER_JOBS = 16;

/** Sent by the pool when it closes: the worker releases its files and exits. */
const CLOSE = 'close';
/** Sent by a worker once its job module is loaded. */
const READY = 'ready';

/** The buffer of `u` when it can be transferred (it owns its whole ArrayBuffer), else nothing. */
export function transferable(u: Uint8Array): ArrayBuffer[] {
  return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.buffer instanceof ArrayBuffer ? [u.buffer] : [];
}

function spawn(options: PoolOptions): Worker {
  const data = { strataWorkerPool: true, module: options.module, config: options.config };
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    // Running from source under tsx: workers do not inherit its loader, so register it first.
    const api = import.meta.resolve('tsx/esm/api');
    const code = `import(${JSON.stringify(api)}).then((a) => { a.register(); return import(${JSON.stringify(self)}); })`;
    return new Worker(code, { eval: true, workerData: data, resourceLimits: WORKER_LIMITS });
  }
  return new Worker(new URL(self), { workerData: data, resourceLimits: WORKER_LIMITS });
}

export class WorkerPool<J, R> {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly waiting = new Map<number, { w: number; resolve: (r: R) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | undefined;
  /** Per worker: jobs submitted and not yet posted, with the buffers they transfer. */
  private readonly unsent: Array<{ envs: Envelope<J>[]; transfer: ArrayBuffer[] }> = [];
  /** Per worker: whether it has loaded its job module. */
  private readonly ready: boolean[] = [];
  /** Per worker: the jobs it has answered, and its recent busy and total time (ms, decaying over BUSY_WINDOW_MS). */
  private readonly pace: Array<{ jobs: number; busy: number; total: number }> = [];
  private flushing: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(private readonly options: PoolOptions) {
    this.start();
  }

  /** Starts one more worker. */
  private start(): void {
    const i = this.workers.length;
    const w = spawn(this.options);
    w.on('message', (m: Answers<R> | typeof READY) => {
      if (m === READY) {
        this.ready[i] = true;
        return;
      }
      const p = this.pace[i]!;
      const keep = Math.exp(-(m.busy + m.idle) / BUSY_WINDOW_MS);
      p.busy = p.busy * keep + m.busy;
      p.total = p.total * keep + m.busy + m.idle;
      p.jobs += m.replies.length;
      for (const r of m.replies) this.onReply(i, r);
    });
    w.on('error', (e) => this.fail(e));
    w.on('exit', (code) => {
      if (code !== 0 && !this.closed) this.fail(new Error(`${this.options.what} worker exited with code ${code}`));
    });
    w.unref(); // idle workers do not hold the process open; ref'd while they have work
    this.workers.push(w);
    this.load.push(0);
    this.ready.push(false);
    this.pace.push({ jobs: 0, busy: 0, total: 0 });
    this.unsent.push({ envs: [], transfer: [] });
  }

  /** The worker the next job goes to: the least loaded of those ready, else of all. */
  private pick(): number {
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) {
      if (this.ready[i] !== this.ready[w] ? this.ready[i] : this.load[i]! < this.load[w]!) w = i;
    }
    return w;
  }

  private onReply(w: number, m: Reply<R>): void {
    const p = this.waiting.get(m.id);
    if (!p) return;
    this.waiting.delete(m.id);
    if (--this.load[w]! === 0) this.workers[w]?.unref();
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(`${this.options.what} failed in a worker: ${m.message}`));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }

  /** Whether a worker is busy enough that another thread would share its work (BUSY_SHARE). */
  private behind(): boolean {
    return this.pace.some((p) => p.jobs >= BUSY_AFTER_JOBS && p.busy >= BUSY_SHARE * p.total);
  }

  /** How many worker threads the pool has started so far. */
  get started(): number {
    return this.workers.length;
  }

  /** Runs `job` on the least-loaded worker; `transfer` moves those buffers to it. */
  run(job: J, transfer: ArrayBuffer[] = []): Promise<R> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new Error(`${this.options.what}: the worker pool is closed`));
    if (this.workers.length < this.options.threads && this.behind() && this.load.every((n, i) => n > 0 || !this.ready[i])) this.start();
    const w = this.pick();
    const id = this.nextId++;
    if (this.load[w]!++ === 0) this.workers[w]!.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { w, resolve, reject });
      const batch = this.unsent[w]!;
      batch.envs.push({ id, job });
      batch.transfer.push(...transfer);
      this.flushing ??= setImmediate(() => this.flush());
    });
  }

  /** Posts every worker's unsent jobs, one message each. */
  private flush(): void {
    this.flushing = undefined;
    for (let w = 0; w < this.workers.length; w++) {
      const batch = this.unsent[w]!;
      if (batch.envs.length === 0) continue;
      this.unsent[w] = { envs: [], transfer: [] };
      this.workers[w]!.postMessage(batch.envs, batch.transfer);
    }
  }

  /** Lets each worker close its handler's files and exit (descriptors outlive a terminated thread). */
  async close(): Promise<void> {
    if (this.flushing) clearImmediate(this.flushing);
    this.flush();
    this.closed = true;
    const ws = this.workers.splice(0);
    await Promise.all(
      ws.map(async (w) => {
        const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        w.postMessage(CLOSE);
        const timer = setTimeout(() => void w.terminate(), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}

if (!isMainThread && (workerData as { strataWorkerPool?: boolean } | null)?.strataWorkerPool) {
  const { module, config } = workerData as { module: string; config: unknown };
  const port = parentPort!;
  // Messages wait in the port's queue until the listener is attached.
  void import(module).then((mod: { createJobHandler(config: unknown): JobHandler<unknown, unknown> }) => {
    const handler = mod.createJobHandler(config);
    // When the worker last sent answers (at first, when it was ready); the time since then
    // until the next batch came is idle.
    let sent = performance.now();
    port.postMessage(READY);
    port.on('message', (m: Envelope<unknown>[] | typeof CLOSE) => {
      if (m === CLOSE) {
        handler.close?.();
        port.close();
        return;
      }
      // Answers go back together, unless answering took long: then at once, so that the
      // writer, which waits for the oldest, is not held up by the rest of the batch.
      let replies: Reply<unknown>[] = [];
      let back: ArrayBuffer[] = [];
      const start = performance.now();
      let idle = start - sent;
      sent = start;
      const send = (now: number) => {
        port.postMessage({ replies, busy: now - sent, idle } satisfies Answers<unknown>, back);
        replies = [];
        back = [];
        idle = 0;
        sent = now;
      };
      for (const env of m) {
        try {
          const r = handler.run(env.job);
          replies.push({ id: env.id, ok: true, result: r.result });
          back.push(...(r.transfer ?? []));
        } catch (e) {
          replies.push({ id: env.id, ok: false, message: e instanceof Error ? e.message : String(e) });
        }
        const now = performance.now();
        if (now - sent >= REPLY_AFTER_MS) send(now);
      }
      if (replies.length > 0) send(performance.now());
    });
  });
}

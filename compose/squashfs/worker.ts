/**
 * Block compression in worker threads.
 *
 * `BlockPool` (main thread) hands raw blocks to N workers and returns a promise per block;
 * the caller decides output order (the writer writes results in submission order, so the
 * image does not depend on N or on which worker finished first).
 *
 * The same module is the worker entry: started with workerData.strataSquashfsWorker, it
 * answers each `BlockTask` with one `BlockResult`:
 *   - kind 'sparse':     the block is all zeros and sparse holes were allowed (data blocks);
 *   - kind 'raw':        compression did not shrink it; `data` is the raw block;
 *   - kind 'compressed': `data` is the compressed block.
 * `cache` is 'hit' / 'miss' when a BlockCache is configured, else 'none'.
 */
import { createHash } from 'node:crypto';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { BlockCache } from './block-cache.js';
import { codecVersion, makeCodec, type CodecSpec } from './compressors.js';

export interface PoolConfig {
  codec: CodecSpec;
  blockSize: number;
  cacheDir?: string;
}

interface BlockTask {
  id: number;
  raw: Uint8Array;
  allowSparse: boolean;
}

export interface BlockResult {
  kind: 'sparse' | 'raw' | 'compressed';
  /** Bytes to write: the raw block itself for 'raw', empty for 'sparse'. */
  data: Uint8Array;
  cache: 'hit' | 'miss' | 'none';
  /** The submitted block, handed back so the caller can reuse its memory. */
  raw?: Uint8Array;
}

type WorkerReply = { id: number; ok: true; result: BlockResult } | { id: number; ok: false; message: string };

/** Sent by the pool when it closes: the worker releases its files and exits. */
const CLOSE = 'close';

let zeros = new Uint8Array(0);
function isAllZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = new Uint8Array(b.length);
  return Buffer.from(b.buffer, b.byteOffset, b.length).equals(zeros.subarray(0, b.length));
}

/** Compresses one block, consulting the cache. Pure function of (config, raw, allowSparse). */
export function processBlock(
  codec: ReturnType<typeof makeCodec>,
  cache: BlockCache | undefined,
  raw: Uint8Array,
  allowSparse: boolean,
): BlockResult {
  if (allowSparse && isAllZero(raw)) return { kind: 'sparse', data: new Uint8Array(0), cache: 'none' };
  let key: string | undefined;
  if (cache) {
    key = cache.key(createHash('sha256').update(raw).digest('hex'));
    const hit = cache.get(key, raw.length);
    if (hit) return hit.raw ? { kind: 'raw', data: raw, cache: 'hit' } : { kind: 'compressed', data: hit.data, cache: 'hit' };
  }
  const out = codec.compress(raw);
  const shrunk = out.length < raw.length;
  if (cache && key) cache.put(key, raw.length, { raw: !shrunk, data: out });
  return shrunk
    ? { kind: 'compressed', data: out, cache: cache ? 'miss' : 'none' }
    : { kind: 'raw', data: raw, cache: cache ? 'miss' : 'none' };
}

function transferable(u: Uint8Array): ArrayBuffer[] {
  // Only transfer buffers we own outright (not slices of Node's shared pool).
  return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.buffer instanceof ArrayBuffer ? [u.buffer] : [];
}

function spawn(config: PoolConfig): Worker {
  const data = { strataSquashfsWorker: true, config };
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    // Running from source under tsx: workers do not inherit its loader, so register it first.
    const api = import.meta.resolve('tsx/esm/api');
    const code = `import(${JSON.stringify(api)}).then((a) => { a.register(); return import(${JSON.stringify(self)}); })`;
    return new Worker(code, { eval: true, workerData: data });
  }
  return new Worker(new URL(self), { workerData: data });
}

export class BlockPool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly waiting = new Map<number, { w: number; resolve: (r: BlockResult) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | undefined;

  constructor(config: PoolConfig, threads: number) {
    // Resolve the library version once here so a missing addon fails in the caller's thread.
    codecVersion(config.codec);
    for (let i = 0; i < threads; i++) {
      const w = spawn(config);
      w.on('message', (m: WorkerReply) => this.onReply(i, m));
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => {
        if (code !== 0 && this.workers.length) this.fail(new Error(`compression worker exited with code ${code}`));
      });
      w.unref(); // idle workers do not hold the process open; ref'd while they have work
      this.workers.push(w);
      this.load.push(0);
    }
  }

  private onReply(w: number, m: WorkerReply): void {
    const p = this.waiting.get(m.id);
    if (!p) return;
    this.waiting.delete(m.id);
    if (--this.load[w]! === 0) this.workers[w]?.unref();
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(`SquashFS block compression failed in a worker: ${m.message}`));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }

  /** Compresses `raw` (ownership passes to the pool: do not touch it afterwards). */
  compress(raw: Uint8Array, allowSparse: boolean): Promise<BlockResult> {
    if (this.failed) return Promise.reject(this.failed);
    let w = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
    const id = this.nextId++;
    if (this.load[w]!++ === 0) this.workers[w]!.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { w, resolve, reject });
      const task: BlockTask = { id, raw, allowSparse };
      this.workers[w]!.postMessage(task, transferable(raw));
    });
  }

  /** Lets each worker close its cache files and exit (file descriptors outlive a terminated thread). */
  async close(): Promise<void> {
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

if (!isMainThread && (workerData as { strataSquashfsWorker?: boolean } | null)?.strataSquashfsWorker) {
  const { config } = workerData as { config: PoolConfig };
  const codec = makeCodec(config.codec);
  const cache = config.cacheDir
    ? new BlockCache(config.cacheDir, {
        compressor: codec.name,
        version: codec.version,
        level: codec.level,
        blockSize: config.blockSize,
      })
    : undefined;
  parentPort!.on('message', (t: BlockTask | typeof CLOSE) => {
    if (t === CLOSE) {
      cache?.close();
      parentPort!.close();
      return;
    }
    let reply: WorkerReply;
    try {
      const result = processBlock(codec, cache, t.raw, t.allowSparse);
      reply = { id: t.id, ok: true, result };
    } catch (e) {
      reply = { id: t.id, ok: false, message: e instanceof Error ? e.message : String(e) };
    }
    const back: ArrayBuffer[] = [];
    if (reply.ok) {
      reply.result.raw = t.raw;
      back.push(...transferable(t.raw));
      if (reply.result.data.buffer !== t.raw.buffer) back.push(...transferable(reply.result.data));
    }
    parentPort!.postMessage(reply, back);
  });
}

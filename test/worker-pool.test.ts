/**
 * The image writers' worker pool (compose/image/shared/worker-pool.ts): how many threads it
 * starts (another only when the ones it has are busy most of the time), and where jobs go
 * while a thread is still loading. Real worker threads running a job module of the tests' own
 * (fixtures/thread-job.ts), which answers with its thread's id after keeping it busy.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { WorkerPool } from '../compose/image/shared/worker-pool.js';
import type { ThreadJob } from './fixtures/thread-job.js';

const test = suite('worker pool');
type Done = { n: number; thread: number };
const pool = (threads: number) => new WorkerPool<ThreadJob, Done>({ module: new URL('./fixtures/thread-job.js', import.meta.url).href, config: null, threads, what: 'test jobs' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `count` jobs of `ms` each as an image writer does: up to `window` in flight, the next
 * submitted as the oldest is answered, `gap` ms apart (0: as fast as they are answered).
 * `submitted(n, started)` is told the pool's threads after each submission.
 */
async function feed(p: WorkerPool<ThreadJob, Done>, count: number, ms: number, window: number, gap = 0, submitted?: (n: number, started: number) => void): Promise<Done[]> {
  const all: Promise<Done>[] = [];
  for (let n = 0; n < count; n++) {
    if (n >= window) await all[n - window];
    if (gap > 0) await sleep(gap);
    all.push(p.run({ n, ms }));
    submitted?.(n, p.started);
  }
  return Promise.all(all);
}

test('one job at a time: one thread, however many the pool may start', async () => {
  const p = pool(3);
  try {
    for (let n = 0; n < 5; n++) assert.is((await p.run({ n, ms: 1 })).n, n);
    assert.is(p.started, 1, 'a job that finds a thread idle does not start another');
  } finally {
    await p.close();
  }
});

test('jobs that keep a thread busy start threads up to the limit, together, and all answer', async () => {
  const p = pool(3);
  try {
    const startedAt: number[] = [];
    const done = await feed(p, 150, 5, 8, 0, (n, started) => {
      if (startedAt[started] === undefined) startedAt[started] = n;
    });
    assert.equal(
      done.map((d) => d.n),
      Array.from({ length: 150 }, (_, n) => n),
    );
    assert.is(p.started, 3);
    assert.is(new Set(done.map((d) => d.thread)).size, 3, 'the later threads took jobs once they had loaded');
    // The third starts as soon as the first is still behind, not once the second has loaded.
    assert.ok(startedAt[3]! - startedAt[2]! <= 2, `threads 2 and 3 started at jobs ${startedAt[2]} and ${startedAt[3]}`);
  } finally {
    await p.close();
  }
});

test('jobs a thread answers faster than they come start no other thread, though it has one in hand at each', async () => {
  const p = pool(2);
  try {
    // Two jobs at a time, every 2 ms: the second always finds the thread with work (a second
    // thread started under the old rule), but the thread is busy a fifth of the time. The
    // thread has loaded first: jobs that queue while it loads are a backlog, which is busy.
    await p.run({ n: -1, ms: 0 });
    const all: Promise<Done>[] = [];
    for (let n = 0; n < 120; n += 2) {
      all.push(p.run({ n, ms: 0.2 }), p.run({ n: n + 1, ms: 0.2 }));
      await sleep(2);
    }
    assert.is((await Promise.all(all)).length, 120);
    assert.is(p.started, 1, 'a thread that waits for work does not get company');
  } finally {
    await p.close();
  }
});

test('jobs go to a thread that has loaded, not to one still loading', async () => {
  const p = pool(2);
  try {
    // Busy jobs until the second thread starts; the jobs submitted while it loads go to the first.
    const whileLoading: number[] = [];
    let at: number | undefined;
    const done = await feed(p, 60, 5, 8, 0, (n, started) => {
      if (started === 2 && at === undefined) at = n;
      if (at !== undefined && n < at + 3) whileLoading.push(n);
    });
    assert.is(p.started, 2);
    assert.ok(at !== undefined && at >= 16, `the second thread started after the first had shown it was busy (job ${at})`);
    const first = done[0]!.thread;
    for (const n of whileLoading) assert.is(done[n]!.thread, first, `job ${n}, submitted as the second thread loaded`);
  } finally {
    await p.close();
  }
});

test('a closed pool refuses jobs', async () => {
  const p = pool(2);
  await p.close();
  try {
    await p.run({ n: 0, ms: 0 });
    assert.unreachable('the job ran');
  } catch (e) {
    assert.match((e as Error).message, /test jobs: the worker pool is closed/);
  }
});

test.run();

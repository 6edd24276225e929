/**
 * The image writers' worker pool (compose/image/shared/worker-pool.ts): how many threads it
 * starts, and where jobs go while a thread is still loading. Real worker threads running a job
 * module of the tests' own (fixtures/thread-job.ts), which answers with its thread's id.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { WorkerPool } from '../compose/image/shared/worker-pool.js';
import type { ThreadJob } from './fixtures/thread-job.js';

const test = suite('worker pool');
const pool = (threads: number) =>
  new WorkerPool<ThreadJob, { n: number; thread: number }>({ module: new URL('./fixtures/thread-job.js', import.meta.url).href, config: null, threads, what: 'test jobs' });

test('one job at a time: one thread, however many the pool may start', async () => {
  const p = pool(3);
  try {
    for (let n = 0; n < 5; n++) assert.is((await p.run({ n, ms: 1 })).n, n);
    assert.is(p.started, 1, 'a job that finds a thread idle does not start another');
  } finally {
    await p.close();
  }
});

test('a burst of jobs starts threads up to the limit, and both answer', async () => {
  const p = pool(2);
  try {
    const done = await Promise.all(Array.from({ length: 40 }, (_, n) => p.run({ n, ms: 20 })));
    assert.equal(
      done.map((d) => d.n),
      Array.from({ length: 40 }, (_, n) => n),
    );
    assert.is(p.started, 2);
    assert.is(new Set(done.map((d) => d.thread)).size, 2, 'the second thread took jobs once it had loaded');
  } finally {
    await p.close();
  }
});

test('jobs go to a thread that has loaded, not to one still loading', async () => {
  const p = pool(2);
  try {
    const first = await p.run({ n: 0, ms: 0 }); // the first thread has loaded
    // The second job finds the first thread busy: a second thread starts, but the job waits
    // for the first rather than for the new thread to load.
    const [a, b] = await Promise.all([p.run({ n: 1, ms: 0 }), p.run({ n: 2, ms: 0 })]);
    assert.is(p.started, 2);
    assert.is(a.thread, first.thread);
    assert.is(b.thread, first.thread);
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

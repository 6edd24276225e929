/**
 * What the bounded-memory tests share (scale-memory, scale-acl-memory, scale-link-memory): a
 * suite with a temp dir holding a store and a work dir, the V8 heap cap every step runs
 * under, and a sample of the generated files (bench/scale-data.ts).
 */
import { suite, type Test } from 'uvu';
import { join } from 'node:path';
import { scaleEntries, type ScaleEntry } from '../../bench/scale-data.js';
import { ramDir, removeDir } from './tmp.js';

/** V8's old space in the bounded-memory tests: a step either fits or aborts. */
export const HEAP_MIB = 96;
/** The environment of a capped step. */
export const capped = { NODE_OPTIONS: `--max-old-space-size=${HEAP_MIB}` };

/**
 * The SquashFS level of the image builds in the link and ACL tests: zstd 3, not the default 15.
 * The level changes nothing the capped heap holds (the compressors' state is C memory in the
 * workers), and at 15 the builds of those 400,000-entry stacks took 49 s of CPU where 3 takes
 * 17 s.
 */
export const FAST_SQUASH = ['--comp', 'zstd', '--level', '3'];

/**
 * scale-memory's SquashFS build: one worker at zstd 9, so that this capped build runs with the
 * compression behind the writer (the writer held back, its queue bounded). On its 200,000
 * files the writer waited for the worker 8 of 21 s (main-thread profile, 2026-11-29), as it
 * waited 24 of 40 s at the default level 15 on both cores, which took 75 s of CPU against 27.
 */
export const BEHIND_SQUASH = ['--comp', 'zstd', '--level', '9', '--workers', '1'];

export interface ScaleContext {
  dir: string;
  store: string;
  cwd: string;
}

/** A suite whose context has a fresh temp dir (`prefix`; on tmpfs when there is one: ramDir), the store and the work dir in it; removed after. */
export function scaleSuite<T extends ScaleContext>(name: string, prefix: string): Test<T> {
  const test = suite<T>(name);
  test.before((ctx) => {
    ctx.dir = ramDir(prefix);
    ctx.store = join(ctx.dir, 'store');
    ctx.cwd = join(ctx.dir, 'work');
  });
  test.after((ctx) => removeDir(ctx.dir));
  return test;
}

/** Every `every`th file of the `n`-file generated tree. */
export function* sampleFiles(n: number, every: number): Generator<ScaleEntry> {
  let i = 0;
  for (const e of scaleEntries(n)) if (!e.dir && i++ % every === 0) yield e;
}

/**
 * The strata CLI as the tests run it: the compiled `dist/cli/main.js` (test/run.js builds it
 * first), or $STRATA_TEST_CLI to check that the tests fail against a mutated build.
 */
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { run, RunResult } from './tmp.js';

export const CLI =
  process.env.STRATA_TEST_CLI ||
  [new URL('../../cli/main.js', import.meta.url), new URL('../../dist/cli/main.js', import.meta.url)]
    .map((u) => fileURLToPath(u))
    .find((p) => existsSync(p))!;

/** `strata --store STORE ARGS…` in `cwd`, optionally behind a prefix such as setpriv. */
export function strataIn(store: string, cwd: string, args: readonly string[], opts: { prefix?: string[]; env?: Record<string, string> } = {}): RunResult {
  const argv = [process.execPath, CLI, '--store', store, ...args];
  const [cmd, ...rest] = [...(opts.prefix ?? []), ...argv];
  return run(cmd!, rest, { cwd, env: opts.env });
}

/** Fails the test unless the command exited 0. */
export function ok(r: RunResult, what: string): RunResult {
  assert.is(r.code, 0, `${what} failed (exit ${r.code}): ${r.stderr}`);
  return r;
}

/** uvu drops an error thrown by a `before` hook without a word; print it before rethrowing. */
export function loud<T>(fn: (ctx: T) => void): (ctx: T) => void {
  return (ctx) => {
    try {
      fn(ctx);
    } catch (e) {
      process.stderr.write(`suite setup failed: ${(e as Error).stack ?? e}\n`);
      throw e;
    }
  };
}

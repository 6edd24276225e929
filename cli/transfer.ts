/**
 * Progress bars (terminal only) and retry notes for registry transfers: push, pull, and the
 * fetches of missing blobs that sandbox, squash and rebuild start.
 */
import type { TransferHooks } from '../store/remote.js';
import type { Context } from './main.js';
import { progress, type Progress } from './progress.js';

export function transferHooks(ctx: Context): TransferHooks {
  const show = !ctx.global().quiet && !ctx.global().json;
  let bar: Progress | undefined;
  let total = 0;
  return {
    onModule: ({ fullName, action, total: t }) => {
      bar?.done();
      total = t;
      bar = progress(`${action === 'push' ? 'pushing' : 'pulling'} ${fullName}`, show);
    },
    onProgress: (done) => bar?.update(done, total),
    onModuleDone: () => {
      bar?.done();
      bar = undefined;
    },
    onRetry: (i) => {
      bar?.done();
      ctx.output().note(`strata: ${i.what}: ${i.reason}; retrying in ${(i.delayMs / 1000).toFixed(1)} s (try ${i.attempt + 1})`);
    },
  };
}


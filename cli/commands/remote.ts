/**
 * `strata store push | pull | remote …`: sharing modules through OCI registries.
 */
import { Command } from 'commander';
import { usage } from '../errors.js';
import { result } from '../output.js';
import { table } from '../output.js';
import { human } from '../progress.js';
import type { Action } from './action.js';

export function remoteCommands(store: Command, action: Action): void {
  store
    .command('push <target> [modules...]')
    .description('push modules (default: all that the remote may receive) to REGISTRY/REPO or a configured remote')
    .option('--compression <kind>', 'layer compression: zstd (default), gzip or none')
    .action(
      action(async (ctx, target: string, modules: string[], o: { compression?: string }) => {
        const compression = o.compression ?? 'zstd';
        if (compression !== 'zstd' && compression !== 'gzip' && compression !== 'none') {
          throw usage(`--compression takes zstd, gzip or none, not '${compression}'`);
        }
        const r = await (await ctx.store()).push(target, modules, { ...ctx.transfer(), compression });
        const mark = (p: { default?: boolean }) => (p.default ? ' (default)' : '');
        return result(r, () =>
          r.map((p) =>
            p.status === 'skipped'
              ? `skipped ${p.fullName}: ${p.reason}`
              : p.status === 'unchanged'
                ? `${p.fullName}: already on ${target} as ${p.tag}${mark(p)}`
                : `pushed ${p.fullName} as ${target}:${p.tag}${mark(p)} (${p.uploaded.length} of 3 blobs sent)  ${p.digest}`,
          ),
        );
      }),
    );

  store
    .command('pull <source> [refs...]')
    .description('pull modules (fullNames or record CIDs; default: every tag) from REGISTRY/REPO or a remote')
    .option('--force', 'replace a module of the same name with other content')
    .action(
      action(async (ctx, source: string, refs: string[], o: { force?: boolean }) => {
        const r = await (await ctx.store()).pull(source, refs, { ...ctx.transfer(), force: o.force });
        return result(r, () =>
          r.map((p) => {
            const mark = p.default ? ' (now the default)' : '';
            return p.status === 'unchanged'
              ? `${p.fullName}: already in the store, unchanged${mark}`
              : `${p.status} ${p.fullName}  record ${p.record}  (${human(p.bytes)})${mark}`;
          }),
        );
      }),
    );

  const remote = store.command('remote').description('registries to push to and fetch missing blobs from');
  remote
    .command('add <name> <url>')
    .description('add a remote: URL is REGISTRY/REPO (http for loopback hosts, else https)')
    .option('--site-internal', 'the registry never leaves the site: restricted modules may be pushed to it')
    .action(
      action(async (ctx, name: string, url: string, o: { siteInternal?: boolean }) => {
        const r = await (await ctx.store()).addRemote(name, url, { siteInternal: o.siteInternal });
        return result(r, () => `added remote ${r.name} ${r.url}${r.siteInternal ? ' (site-internal)' : ''}`);
      }),
    );
  remote
    .command('ls')
    .description('list remotes')
    .action(
      action(async (ctx) => {
        const r = await (await ctx.store()).listRemotes();
        return result(r, () => table(r.map((x) => [x.name, x.url, x.siteInternal ? 'site-internal' : ''])));
      }),
    );
  remote
    .command('rm <name>')
    .description('remove a remote')
    .action(
      action(async (ctx, name: string) => {
        await (await ctx.store()).removeRemote(name);
        return result({ removed: name }, () => `removed remote ${name}`);
      }),
    );
}

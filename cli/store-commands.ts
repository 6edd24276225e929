/**
 * `strata store …`: thin handlers that call the store and print what it returns.
 */
import { Command } from 'commander';
import { parseCid } from '../store/cid.js';
import { exportModule } from '../store/export.js';
import { parseEnvOp, EnvOp } from '../store/record.js';
import { addRemote, listRemotes, pull, push, removeRemote } from '../store/remote.js';
import { transferHooks } from './transfer.js';
import { Store } from '../store/store.js';
import { table } from './output.js';
import { human, progress, type Progress } from './progress.js';
import type { Context } from './main.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function storeCommands(program: Command, ctx: Context): void {
  const store = program.command('store').description('the content-addressed layer store');

  store
    .command('import <fullName> <source>')
    .description('import a tar (plain, gzip, zstd), a directory or an overlay upperdir as module NAME/VERSION')
    .option('--requires <M>', 'module this one needs (repeatable)', collect, [])
    .option('--conflicts <M>', 'module this one cannot be loaded with (repeatable)', collect, [])
    .option('--family <F>', 'Lmod family (one module of a family at a time)')
    .option('--prepend <VAR=VAL>', 'prepend VAL to path variable VAR (repeatable)', collect, [])
    .option('--append <VAR=VAL>', 'append VAL to path variable VAR (repeatable)', collect, [])
    .option('--setenv <VAR=VAL>', 'set VAR to VAL (repeatable)', collect, [])
    .option('--description <T>', 'one-line description')
    .option('--restricted <GROUP>', 'only members of GROUP may load it')
    .option('--default', 'mark as the default version of its name')
    .option('--overlay', 'the source is an overlayfs upperdir (char 0/0 whiteouts, opaque dirs)')
    .option('--force', 'replace an existing module of the same name with other content')
    .action(async (fullName: string, source: string, o) => {
      const out = ctx.output();
      const s = await ctx.store();
      const env: EnvOp[] = [
        ...o.prepend.map((t: string) => parseEnvOp('prepend', t)),
        ...o.append.map((t: string) => parseEnvOp('append', t)),
        ...o.setenv.map((t: string) => parseEnvOp('set', t)),
      ];
      const bar = progress(`importing ${fullName}`, !ctx.global().quiet && !ctx.global().json);
      const r = await s.importModule(fullName, source, {
        requires: o.requires,
        conflicts: o.conflicts,
        family: o.family,
        env,
        description: o.description,
        restricted: o.restricted,
        default: o.default,
        overlay: o.overlay,
        force: o.force,
        onProgress: (n, total) => bar.update(n, total),
      });
      bar.done();
      for (const sk of r.skipped) out.warn(`skipped ${sk}: a layer cannot hold it`);
      out.result(r, () => {
        const what = { imported: 'imported', unchanged: 'already in the store, unchanged:', replaced: 'replaced' }[r.status];
        return [`${what} ${r.fullName}  layer ${r.layer}  (${r.entries} entries, ${human(r.bytes)})`];
      });
    });

  store
    .command('ls [pattern]')
    .description('list modules (substring or glob)')
    .action(async (pattern?: string) => {
      const mods = await (await ctx.store()).list(pattern);
      ctx.output().result(mods, () =>
        table(mods.map((m) => [m.fullName + (m.isDefault ? ' (D)' : '') + (m.restricted ? ' (R)' : ''), m.record, m.damaged ? `DAMAGED: ${m.damaged}` : m.description])),
      );
    });

  store
    .command('show <module>')
    .description('a module record, its layer and manifest summary')
    .action(async (ref: string) => {
      const s = await ctx.store();
      const mod = await s.get(ref);
      const manifest = await s.manifestOf(mod);
      const layerBytes = await s.blobs.size(parseCid(mod.record.layer).hex);
      const acls = Object.values(manifest.entries).filter((e) => e.acl).length;
      const xattrs = Object.values(manifest.entries).filter((e) => e.xattrs).length;
      const data = { fullName: mod.fullName, cid: mod.cid, record: mod.record, manifest: { stats: manifest.stats, aclPaths: acls, xattrPaths: xattrs } };
      ctx.output().result(data, () => {
        const r = mod.record;
        return [
          `module       ${mod.fullName}`,
          `record       ${mod.cid}`,
          `layer        ${r.layer}  (${human(layerBytes)} tar, ${manifest.stats.entries} entries)`,
          `manifest     ${r.manifest}  (${acls} paths with ACLs, ${xattrs} with xattrs)`,
          `description  ${r.description}`,
          r.requires.length ? `requires     ${r.requires.join(' ')}` : '',
          r.conflicts.length ? `conflicts    ${r.conflicts.join(' ')}` : '',
          r.family ? `family       ${r.family}` : '',
          r.restricted ? `restricted   group ${r.restricted}` : '',
          ...r.env.map((e) => `env          ${e.op} ${e.var}=${e.value}`),
        ];
      });
    });

  store
    .command('rm <module>')
    .description('remove a module from the index (its blobs go at the next gc)')
    .action(async (ref: string) => {
      await (await ctx.store()).remove(ref);
      ctx.output().result({ removed: ref }, () => `removed ${ref}`);
    });

  store
    .command('default <module>')
    .description('mark a module as the default version of its name')
    .action(async (ref: string) => {
      await (await ctx.store()).setDefault(ref);
      ctx.output().result({ default: ref }, () => `${ref} is now the default`);
    });

  store
    .command('gc')
    .description('remove blobs no module or collection references')
    .option('--dry-run', 'list what would be removed')
    .action(async (o) => {
      const r = await (await ctx.store()).gc({ dryRun: o.dryRun });
      ctx.output().result(r, () => [
        ...(o.dryRun ? r.removed.map((d) => `would remove ${d}`) : []),
        `${o.dryRun ? 'would free' : 'freed'} ${human(r.bytes)} in ${r.removed.length} blobs`,
      ]);
    });

  store
    .command('verify [module]')
    .description('check every blob of every module (or of one) against its digest')
    .action(async (ref?: string) => {
      const r = await (await ctx.store()).verify(ref);
      ctx.output().result(r, () =>
        r.problems.length === 0
          ? `${r.modules} modules verified, no problems`
          : r.problems.map((p) => `${p.module}: ${p.what} ${p.blob} is ${p.status}`),
      );
      if (r.problems.length > 0) ctx.fail(`${r.problems.length} problems in ${new Set(r.problems.map((p) => p.module)).size} modules`, 'restore them with `strata store import --force` or a pull');
    });

  store
    .command('export <module> <out>')
    .description('write the layer as a tar with SCHILY.xattr and SCHILY.acl records')
    .action(async (ref: string, outPath: string) => {
      const s = await ctx.store();
      const r = await exportModule(s, await s.get(ref), outPath);
      ctx.output().result({ module: ref, out: outPath, ...r }, () => `wrote ${outPath} (${r.entries} entries, ${human(r.bytes)})`);
    });

  remoteCommands(store, ctx);
}

function remoteCommands(store: Command, ctx: Context): void {

  store
    .command('push <target> [modules...]')
    .description('push modules (default: all) to REGISTRY/REPO or a configured remote')
    .action(async (target: string, modules: string[]) => {
      const r = await push(await ctx.store(), target, modules, transferHooks(ctx));
      ctx.output().result(r, () => r.map((p) => p.status === 'unchanged'
        ? `${p.fullName}: already on ${target} as ${p.tag}`
        : `pushed ${p.fullName} as ${target}:${p.tag} (${p.uploaded.length} of 3 blobs sent)  ${p.digest}`));
    });

  store
    .command('pull <source> [refs...]')
    .description('pull modules (fullNames or record CIDs; default: every tag) from REGISTRY/REPO or a remote')
    .option('--force', 'replace a module of the same name with other content')
    .action(async (source: string, refs: string[], o) => {
      const r = await pull(await ctx.store(), source, refs, { ...transferHooks(ctx), force: o.force });
      ctx.output().result(r, () => r.map((p) => p.status === 'unchanged'
        ? `${p.fullName}: already in the store, unchanged`
        : `${p.status} ${p.fullName}  record ${p.record}  (${human(p.bytes)})`));
    });

  const remote = store.command('remote').description('registries to push to and fetch missing blobs from');
  remote
    .command('add <name> <url>')
    .description('add a remote: URL is REGISTRY/REPO (http for loopback hosts, else https)')
    .option('--site-internal', 'the registry never leaves the site: restricted modules may be pushed to it')
    .action(async (name: string, url: string, o) => {
      const r = await addRemote(await ctx.store(), name, url, { siteInternal: o.siteInternal });
      ctx.output().result(r, () => `added remote ${r.name} ${r.url}${r.siteInternal ? ' (site-internal)' : ''}`);
    });
  remote
    .command('ls')
    .description('list remotes')
    .action(async () => {
      const r = await listRemotes(await ctx.store());
      ctx.output().result(r, () => table(r.map((x) => [x.name, x.url, x.siteInternal ? 'site-internal' : ''])));
    });
  remote
    .command('rm <name>')
    .description('remove a remote')
    .action(async (name: string) => {
      await removeRemote(await ctx.store(), name);
      ctx.output().result({ removed: name }, () => `removed remote ${name}`);
    });
}

/**
 * `strata store …`: import, list, show, remove, mark defaults, gc, verify, export.
 */
import { Command } from 'commander';
import { checkFullName, isStrataError, parseEnvOp, recordExtras, StrataError, STORE_ERR, type EnvOp } from '../../store/index.js';
import { usage } from '../errors.js';
import type { Context } from '../context.js';
import { plural, result, table, type Result } from '../output.js';
import { human } from '../progress.js';
import type { Action } from './action.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];
/** `--load-any a,b,c`: one group of alternatives. */
const anyOf = (g: string) => g.split(',').map((m) => m.trim()).filter((m) => m !== '');

interface ImportFlags {
  requires: string[];
  conflicts: string[];
  family?: string;
  prepend: string[];
  append: string[];
  setenv: string[];
  description?: string;
  restricted?: string;
  unrestrict?: boolean;
  allowMissing?: boolean;
  default?: boolean;
  overlay?: boolean;
  force?: boolean;
  under: string[];
  whatis: string[];
  keyword: string[];
  prereq: string[];
  loadAny: string[];
  hidden?: boolean;
  sticky?: boolean;
}

/** Runs a store-side check of something typed on the command line; a malformed value is usage (exit 2). */
function typed<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (isStrataError(e, STORE_ERR.INVALID_ARGUMENT)) throw usage(e.message, e.hint);
    throw e;
  }
}

export async function importCommand(ctx: Context, fullName: string, source: string, o: ImportFlags): Promise<Result> {
  const env: EnvOp[] = typed(() => {
    for (const m of [fullName, ...o.requires, ...o.conflicts, ...o.under, ...o.prereq, ...o.loadAny.flatMap(anyOf)]) checkFullName(m);
    return [
      ...o.prepend.map((t) => parseEnvOp('prepend', t)),
      ...o.append.map((t) => parseEnvOp('append', t)),
      ...o.setenv.map((t) => parseEnvOp('set', t)),
    ];
  });
  const store = await ctx.store();
  const bar = ctx.progress(`importing ${fullName}`);
  const r = await store.importModule(fullName, source, {
    requires: o.requires,
    conflicts: o.conflicts,
    family: o.family,
    env,
    description: o.description,
    restricted: o.restricted,
    unrestrict: o.unrestrict,
    allowMissing: o.allowMissing,
    extras: recordExtras({
      parents: o.under,
      whatis: o.whatis,
      keywords: o.keyword.flatMap((k) => k.split(',').map((w) => w.trim()).filter((w) => w !== '')),
      prereq: o.prereq,
      loadAny: o.loadAny.map(anyOf),
      hidden: o.hidden,
      sticky: o.sticky,
    }),
    default: o.default,
    overlay: o.overlay,
    force: o.force,
    onProgress: (n, total) => bar.update(n, total),
  });
  bar.done();
  const what = { imported: 'imported', unchanged: 'already in the store, unchanged:', replaced: 'replaced', repaired: 'already in the store, damaged blobs repaired:' }[r.status];
  return result(r, () => `${what} ${r.fullName}  layer ${r.layer}  (${plural(r.entries, 'entry', 'entries')}, ${human(r.bytes)})`, {
    warnings: r.skipped.map((s) => `skipped ${s}: a layer cannot hold it`),
  });
}

export async function lsCommand(ctx: Context, pattern?: string): Promise<Result> {
  const mods = await (await ctx.store()).list(pattern);
  return result(mods, () =>
    table(mods.map((m) => [m.fullName + (m.isDefault ? ' (D)' : '') + (m.restricted ? ' (R)' : ''), m.record, m.damaged ? `DAMAGED: ${m.damaged}` : m.description])),
  );
}

export async function showCommand(ctx: Context, ref: string): Promise<Result> {
  const d = await (await ctx.store()).describe(ref);
  const r = d.record;
  return result({ fullName: d.fullName, cid: d.cid, record: r, manifest: d.manifest }, () => [
    `module       ${d.fullName}`,
    `record       ${d.cid}`,
    `layer        ${r.layer}  (${human(d.layerBytes)} tar, ${plural(d.manifest.stats.entries, 'entry', 'entries')})`,
    `manifest     ${r.manifest}  (${plural(d.manifest.aclPaths, 'path')} with ACLs, ${d.manifest.xattrPaths} with xattrs)`,
    `description  ${r.description}`,
    r.requires.length ? `requires     ${r.requires.join(' ')}` : '',
    r.conflicts.length ? `conflicts    ${r.conflicts.join(' ')}` : '',
    r.family ? `family       ${r.family}` : '',
    r.restricted ? `restricted   group ${r.restricted}` : '',
    ...r.env.map((e) => `env          ${e.op} ${e.var}=${e.value}`),
  ]);
}

export async function verifyCommand(ctx: Context, ref?: string): Promise<Result> {
  const r = await (await ctx.store()).verify(ref);
  const text = () =>
    r.problems.length === 0
      ? `${plural(r.modules - (r.skipped?.length ?? 0), 'module')} verified, no problems` +
        (r.skipped ? `; ${plural(r.skipped.length, 'restricted module')} skipped (not readable by you)` : '')
      : r.problems.map((p) => `${p.module}: ${p.what} ${p.blob} is ${p.status}`);
  if (r.problems.length === 0) return result(r, text);
  const mods = new Set(r.problems.map((p) => p.module)).size;
  return result(r, text, {
    error: new StrataError(STORE_ERR.VERIFY_FAILED, `${plural(r.problems.length, 'problem')} in ${plural(mods, 'module')}`, {
      hint: 'restore them with `strata store import --force` or a pull',
    }),
  });
}

export function storeCommands(program: Command, action: Action): Command {
  const store = program.command('store').description('the content-addressed layer store');

  store
    .command('import <fullName> <source>')
    .description('import a tar (plain, gzip, zstd), a directory, an overlay upperdir, oci:DIR[:TAG] or docker-archive:FILE as module NAME/VERSION')
    .option('--requires <M>', 'module this one needs (repeatable)', collect, [])
    .option('--conflicts <M>', 'module this one cannot be loaded with (repeatable)', collect, [])
    .option('--family <F>', 'Lmod family (one module of a family at a time)')
    .option('--prepend <VAR=VAL>', 'prepend VAL to path variable VAR (repeatable)', collect, [])
    .option('--append <VAR=VAL>', 'append VAL to path variable VAR (repeatable)', collect, [])
    .option('--setenv <VAR=VAL>', 'set VAR to VAL (repeatable)', collect, [])
    .option('--description <T>', 'one-line description')
    .option('--restricted <GROUP>', 'only members of GROUP may load it or read its content (GROUP must exist)')
    .option('--allow-missing', 'accept --requires/--prereq/--under naming modules not on the store path (yet)')
    .option('--unrestrict', 'lift the restriction this content has from an earlier restricted import (staff)')
    .option('--default', 'mark as the default version of its name')
    .option('--overlay', 'the source is an overlayfs upperdir (char 0/0 whiteouts, opaque dirs)')
    .option('--force', 'replace an existing module of the same name with other content')
    .option('--under <M>', 'hierarchy parent this build is made for, outermost first (repeatable), e.g. --under gcc/12.2 --under mpi/openmpi-4.1', collect, [])
    .option('--prereq <M>', 'module that must already be loaded (Lmod prereq; repeatable)', collect, [])
    .option('--load-any <A,B,...>', 'load the first of these that loads (Lmod load_any; repeatable)', collect, [])
    .option('--whatis <T>', 'a whatis line (repeatable)', collect, [])
    .option('--keyword <W>', 'a keyword for `compose keyword` (repeatable, or comma-separated)', collect, [])
    .option('--hidden', 'leave it out of avail and spider; load it by its full name (Lmod hidden)')
    .option('--sticky', 'purge and unload keep it unless --force (Lmod sticky)')
    .action(action(importCommand));

  store.command('ls [pattern]').description('list modules (substring or glob)').action(action(lsCommand));
  store.command('show <module>').description('a module record, its layer and manifest summary').action(action(showCommand));

  store
    .command('rm <module>')
    .description('remove a module from the index (its blobs go at the next gc)')
    .option('--force', 'remove it even though other modules require it or collections pin it')
    .action(
      action(async (ctx, ref: string, o: { force?: boolean }) => {
        await (await ctx.store()).remove(ref, { force: o.force });
        return result({ removed: ref }, () => `removed ${ref}`);
      }),
    );

  store
    .command('default <module>')
    .description('mark a module as the default version of its name')
    .action(
      action(async (ctx, ref: string) => {
        await (await ctx.store()).setDefault(ref);
        return result({ default: ref }, () => `${ref} is now the default`);
      }),
    );

  store
    .command('gc')
    .description('remove blobs no module or collection references')
    .option('--dry-run', 'list what would be removed')
    .option('--grace <SECONDS>', 'keep what a catalog superseded less than SECONDS ago named (default $STRATA_GC_GRACE or 3600)')
    .option('--cache-max <SIZE>', 'then prune the least recently used image-block packs past SIZE, e.g. 2G (default $STRATA_CACHE_MAX, none)')
    .action(
      action(async (ctx, o: { dryRun?: boolean; grace?: string; cacheMax?: string }) => {
        let graceSeconds: number | undefined;
        if (o.grace !== undefined) {
          graceSeconds = Number(o.grace);
          if (!/^\d+$/.test(o.grace)) throw usage(`--grace ${o.grace}: expected a number of seconds`);
        }
        const capText = o.cacheMax ?? (process.env.STRATA_CACHE_MAX || undefined);
        const { collectBlockCache } = await import('../../compose/caches.js');
        const { parseByteSize } = await import('../../compose/image/index.js');
        const cap = capText === undefined ? undefined : parseByteSize(capText);
        if (capText !== undefined && cap === undefined) throw usage(`--cache-max ${capText}: expected a size such as 500M or 2G`);
        const store = await ctx.store();
        const r = await store.gc({ dryRun: o.dryRun, graceSeconds });
        const cache = o.dryRun ? undefined : await collectBlockCache(store, cap);
        const data = { ...r, ...(cache ? { cacheFreed: cache.freedBytes } : {}) };
        return result(data, () => [
          ...(o.dryRun ? r.removed.map((d) => `would remove ${d}`) : []),
          `${o.dryRun ? 'would free' : 'freed'} ${human(r.bytes)} in ${plural(r.removed.length, 'blob')}` +
            (r.kept > 0 ? `; kept ${plural(r.kept, 'blob')} that builds started in the grace period may still read (--grace 0 frees them)` : ''),
          ...(cache && cache.freedBytes > 0 ? [`freed ${human(cache.freedBytes)} of image-block cache (${plural(cache.removedPacks, 'pack')})`] : []),
        ]);
      }),
    );

  store
    .command('du')
    .description('bytes on disk: blobs, index and snapshots, temp files, and your caches')
    .action(
      action(async (ctx) => {
        const { diskUsage } = await import('../../compose/caches.js');
        const u = await diskUsage(await ctx.store());
        const label: Record<string, string> = { blobs: 'blobs', index: 'index and snapshots', tmp: 'temp files', entryCache: 'entry-list cache', blockCache: 'image-block cache' };
        const total = Object.values(u).reduce((a, b) => a + b, 0);
        return result({ ...u, total }, () => table([...Object.entries(u).map(([k, v]) => [label[k] ?? k, human(v)]), ['total', human(total)]]));
      }),
    );

  store.command('verify [module]').description('check every blob of every module (or of one) against its digest').action(action(verifyCommand));

  store
    .command('export <module> <out>')
    .description('write the layer as a tar with SCHILY.xattr and SCHILY.acl records')
    .action(
      action(async (ctx, ref: string, out: string) => {
        const s = await ctx.store();
        const r = await s.exportModule(await s.get(ref), out);
        return result({ module: ref, out, ...r }, () => `wrote ${out} (${plural(r.entries, 'entry', 'entries')}, ${human(r.bytes)})`);
      }),
    );

  return store;
}

/**
 * `strata compose …`, `strata inspect`, `strata rebuild`: Lmod-style stack editing and outputs.
 */
import { Command } from 'commander';
import * as path from 'node:path';
import { formatAvail, resolveSpec, spider } from '../compose/resolve.js';
import { add, purge, remove, restoreCollection, saveCollection, swap } from '../compose/stack.js';
import { hashListText, lockOf, lockText } from '../compose/lock.js';
import { buildSandbox, inspectTarget } from '../compose/outputs.js';
import {
  availableModules,
  currentUser,
  listCollections,
  loadCollection,
  outputModules,
  readStack,
  saveCollectionTo,
  stackModules,
  writeAtomic,
  writeStack,
} from '../compose/workspace.js';
import * as fsp from 'node:fs/promises';
import { buildImage, ImageOptions } from '../compose/squash.js';
import { unsquash } from '../compose/unsquash.js';
import { StrataError, ERR } from '../store/errors.js';
import { human, progress } from './progress.js';
import { transferHooks } from './transfer.js';
import { table } from './output.js';
import type { Context } from './main.js';

export function composeCommands(program: Command, ctx: Context): void {
  const compose = program.command('compose').description('compose modules into a stack, the Lmod way, and build outputs');
  const cwd = () => process.cwd();

  compose
    .command('avail [pattern]')
    .description('modules you can add: (D) default, (L) in the stack, (R) restricted')
    .action(async (pattern?: string) => {
      const store = await ctx.store();
      const available = await availableModules(store);
      const stack = await readStack(cwd());
      const shown = available.filter((m) => !pattern || m.fullName.toLowerCase().includes(pattern.toLowerCase()));
      ctx.output().result(shown, () => formatAvail(available, stack, pattern, { width: process.stdout.columns ?? 80 }));
    });

  compose
    .command('spider <pattern>')
    .description('every module matching PATTERN, with all versions')
    .action(async (pattern: string) => {
      const found = spider(await availableModules(await ctx.store()), pattern);
      ctx.output().result(found, () =>
        found.length === 0
          ? 'No matching modules found.'
          : found.flatMap((s) => [`  ${s.name}:${s.description ? ` ${s.description}` : ''}`, `     Versions:`, ...s.versions.map((v) => `        ${v}${v === s.default ? ' (D)' : ''}`), '']),
      );
    });

  compose
    .command('show <module>')
    .description("what a module does: layer, requirements, environment")
    .action(async (spec: string) => {
      const store = await ctx.store();
      const info = resolveSpec(spec, await availableModules(store));
      const mod = await store.get(info.fullName);
      const r = mod.record;
      ctx.output().result({ fullName: mod.fullName, record: mod.cid, ...r }, () => [
        `${mod.fullName}  (record ${mod.cid})`,
        r.description ? `whatis("${r.description}")` : '',
        ...r.requires.map((q) => `depends_on("${q}")`),
        ...r.conflicts.map((q) => `conflict("${q}")`),
        r.family ? `family("${r.family}")` : '',
        r.restricted ? `-- restricted to group ${r.restricted}` : '',
        ...r.env.map((e) => `${{ prepend: 'prepend_path', append: 'append_path', set: 'setenv' }[e.op]}("${e.var}","${e.value}")`),
        `-- layer ${r.layer}`,
      ]);
    });

  const change = async (fn: (stack: Awaited<ReturnType<typeof readStack>>, available: Awaited<ReturnType<typeof availableModules>>) => { stack: Awaited<ReturnType<typeof readStack>>; messages: string[] }) => {
    const store = await ctx.store();
    const available = await availableModules(store);
    const result = fn(await readStack(cwd()), available);
    const lock = await writeStack(store, cwd(), result.stack);
    const out = ctx.output();
    for (const m of result.messages) out.note(m);
    out.result({ stack: result.stack, messages: result.messages, lock }, () => '');
  };

  compose
    .command('add <modules...>')
    .description('load modules into the stack (Lmod `module load`)')
    .action((specs: string[]) => change((s, a) => add(s, specs, a, currentUser())));
  compose
    .command('rm <modules...>')
    .description('unload modules and what only they required')
    .action((specs: string[]) => change((s, a) => remove(s, specs, a)));
  compose
    .command('swap <a> <b>')
    .description('replace module A with B')
    .action((a: string, b: string) => change((s, av) => swap(s, a, b, av, currentUser())));
  compose
    .command('purge')
    .description('empty the stack')
    .action(() => change((s) => purge(s)));

  compose
    .command('list')
    .description('the modules in the stack')
    .action(async () => {
      const stack = await readStack(cwd());
      ctx.output().result(stack, () =>
        stack.modules.length === 0
          ? 'No modules loaded'
          : ['Currently Loaded Modules:', ...stack.modules.map((m, i) => `  ${i + 1}) ${m.fullName}${m.auto ? ' (auto)' : ''}`)],
      );
    });

  compose
    .command('save [name]')
    .description('save the stack as a collection pinned to exact records')
    .action(async (name = 'default') => {
      const store = await ctx.store();
      const c = saveCollection(await readStack(cwd()), await availableModules(store));
      await saveCollectionTo(store, name, c);
      ctx.output().result({ name, collection: c }, () => `Saved current collection of modules to: "${name}"`);
    });
  compose
    .command('restore [name]')
    .description('make the stack exactly the saved collection')
    .action((name = 'default') => restore(name));
  async function restore(name: string) {
    const store = await ctx.store();
    const c = await loadCollection(store, name);
    const available = await availableModules(store);
    const result = restoreCollection(c, available, currentUser(), name);
    const lock = await writeStack(store, cwd(), result.stack);
    for (const m of result.messages) ctx.output().note(m);
    ctx.output().result({ stack: result.stack, lock }, () => '');
  }
  compose
    .command('savelist')
    .description('saved collections')
    .action(async () => {
      const names = await listCollections(await ctx.store());
      ctx.output().result(names, () => (names.length === 0 ? 'No named collections.' : ['Named collection list:', ...names.map((n, i) => `  ${i + 1}) ${n}`)]));
    });

  compose
    .command('lock')
    .description('print (or write) the lock of the stack')
    .option('-o, --output <file>', 'write it to FILE')
    .option('--cids', 'the plain hash list instead of the JSON lock')
    .action(async (o) => {
      const store = await ctx.store();
      const lock = lockOf(await stackModules(store, await readStack(cwd())));
      const text = o.cids ? hashListText(lock) : lockText(lock);
      if (o.output) {
        await writeAtomic(o.output, text);
        ctx.output().result({ written: o.output, lock }, () => `wrote ${o.output}`);
      } else if (ctx.global().json) ctx.output().result(lock, () => '');
      else process.stdout.write(text);
    });

  compose
    .command('sandbox <dir>')
    .description('write the stack as a directory tree, ACLs and xattrs intact')
    .option('--lock <file>', 'build from this lock instead of the stack')
    .option('--cids <file>', 'build from this hash list')
    .option('--force', 'replace the contents of a non-empty DIR')
    .action(async (dir: string, o) => {
      const store = await ctx.store();
      const mods = await outputModules(store, cwd(), o, transferHooks(ctx));
      const bar = progress(`sandbox ${dir}`, !ctx.global().quiet && !ctx.global().json);
      const r = await buildSandbox(store, mods, dir, { force: o.force, onProgress: (n, total) => bar.update(n, total) });
      bar.done();
      const skipped = Object.entries(r.skipped);
      if (skipped.length > 0) {
        ctx.output().warn(`as uid ${process.getuid?.()} some metadata could not be applied: ${skipped.map(([k, n]) => `${k} (${n})`).join(', ')}`);
      }
      ctx.output().result({ dir: path.resolve(dir), ...r }, () => `wrote ${dir}: ${r.entries} entries, ${human(r.bytes)} from ${mods.length} modules`);
    });

  const squashOptions = (c: Command) =>
    c
      .option('--lock <file>', 'build from this lock instead of the stack')
      .option('--cids <file>', 'build from this hash list')
      .option('--comp <name>', 'compressor: zstd (default), gzip or lz4', 'zstd')
      .option('--level <n>', 'compression level', (v) => parseInteger(v, '--level'))
      .option('--block-size <n>', 'data block size in bytes (power of two, 4096..1048576)', (v) => parseInteger(v, '--block-size'))
      .option('--workers <n>', 'compression threads (default: all cores; never changes the bytes)', (v) => parseInteger(v, '--workers'));

  const squash = async (out: string, o: { lock?: string; cids?: string; comp: string; level?: number; blockSize?: number; workers?: number }) => {
    const store = await ctx.store();
    const mods = await outputModules(store, cwd(), o, transferHooks(ctx));
    const bar = progress(`squash ${out}`, !ctx.global().quiet && !ctx.global().json);
    const r = await buildImage(store, mods, out, {
      compressor: o.comp as ImageOptions['compressor'],
      level: o.level,
      blockSize: o.blockSize,
      workers: o.workers,
      onProgress: (n, total) => bar.update(n, total),
    });
    bar.done();
    if (r.aclPaths > 0) {
      ctx.output().warn(`${r.aclPaths} paths carry POSIX ACLs, which SquashFS cannot store: kept in /.strata/acl.json with group bits narrowed to what the ACL grants (restore with \`strata unsquash\`)`);
    }
    ctx.output().result(r, () => `wrote ${out}: ${r.entries} entries, ${human(r.bytes)}, sha256 ${r.sha256}`);
  };

  squashOptions(compose.command('squash <out>').description('write the stack as one SquashFS image')).action((out: string, o) => squash(out, o));

  program
    .command('rebuild <lock>')
    .description('rebuild an image from a lock or hash list (same as compose squash --lock/--cids)')
    .requiredOption('-o, --output <file>', 'the image to write')
    .option('--comp <name>', 'compressor: zstd (default), gzip or lz4', 'zstd')
    .option('--level <n>', 'compression level', (v) => parseInteger(v, '--level'))
    .option('--block-size <n>', 'data block size in bytes', (v) => parseInteger(v, '--block-size'))
    .option('--workers <n>', 'compression threads', (v) => parseInteger(v, '--workers'))
    .action(async (file: string, o) => {
      const text = await fsp.readFile(file, 'utf8').catch(() => {
        throw new StrataError(ERR.NOT_FOUND, `${file} does not exist`);
      });
      const isJson = text.trimStart().startsWith('{');
      await squash(o.output, { ...o, lock: isJson ? file : undefined, cids: isJson ? undefined : file });
    });

  program
    .command('unsquash <image> <dir>')
    .description('extract an image and restore its POSIX ACLs from /.strata/acl.json')
    .action(async (image: string, dir: string) => {
      const r = await unsquash(image, dir);
      const skipped = Object.entries(r.skipped);
      if (skipped.length > 0) ctx.output().warn(`some metadata could not be applied: ${skipped.map(([k, n]) => `${k} (${n})`).join(', ')}`);
      ctx.output().result(r, () => `extracted ${r.entries} entries into ${dir}, restored ACLs on ${r.acls} paths`);
    });

  program
    .command('inspect <target>')
    .description('the lock, modules, environment and ACL summary embedded in an image or sandbox')
    .action(async (target: string) => {
      const info = await inspectTarget(target);
      ctx.output().result(info, () => [
        `${target}: ${info.kind}`,
        'modules (lowest layer first):',
        ...table(info.lock.modules.map((m) => [`  ${m.fullName}`, m.record])),
        `environment:`,
        ...info.lock.env.map((e) => `  ${e.op} ${e.var}=${e.value}`),
        `ACLs: ${info.acls.paths} paths (${info.acls.withDefault} with default ACLs)`,
      ]);
    });
}


function parseInteger(v: string, flag: string): number {
  if (!/^\d+$/.test(v)) throw new StrataError(ERR.USAGE, `${flag} takes a whole number, not '${v}'`);
  return Number(v);
}

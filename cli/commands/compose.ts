/**
 * `strata compose …` that edits or shows the stack, the Lmod way: avail, spider, show, add,
 * rm, swap, purge, list, save, restore, savelist, lock.
 */
import { Command } from 'commander';
import { hashListText, lockOf, lockText } from '../../compose/lock.js';
import { availMatching, formatAvail, resolveSpec, spider } from '../../compose/resolve.js';
import { add, purge, remove, restoreCollection, saveCollection, swap, type StackChange, type StackFile } from '../../compose/stack.js';
import {
  availableModules,
  currentUser,
  loadCollection,
  readStack,
  stackModules,
  writeAtomic,
  writeStack,
} from '../../compose/workspace.js';
import type { ModuleInfo } from '../../compose/resolve.js';
import type { Context } from '../context.js';
import { result, type Result } from '../output.js';
import type { Action } from './action.js';

/** Applies a stack operation, writes strata.json and strata.lock, and reports its messages. */
async function change(ctx: Context, op: (stack: StackFile, available: ModuleInfo[]) => StackChange): Promise<Result> {
  const store = await ctx.store();
  const available = await availableModules(store);
  const r = op(await readStack(ctx.cwd), available);
  const lock = await writeStack(store, ctx.cwd, r.stack);
  return result({ stack: r.stack, messages: r.messages, lock }, undefined, { notes: r.messages });
}

export function composeCommands(program: Command, action: Action): Command {
  const compose = program.command('compose').description('compose modules into a stack, the Lmod way, and build outputs');

  compose
    .command('avail [pattern]')
    .description('modules you can add: (D) default, (L) in the stack, (R) restricted')
    .action(
      action(async (ctx, pattern?: string) => {
        const available = await availableModules(await ctx.store());
        const stack = await readStack(ctx.cwd);
        return result(availMatching(available, pattern), () => formatAvail(available, stack, pattern, { width: process.stdout.columns ?? 80 }));
      }),
    );

  compose
    .command('spider <pattern>')
    .description('every module matching PATTERN, with all versions')
    .action(
      action(async (ctx, pattern: string) => {
        const found = spider(await availableModules(await ctx.store()), pattern);
        return result(found, () =>
          found.length === 0
            ? 'No matching modules found.'
            : found.flatMap((s) => [`  ${s.name}:${s.description ? ` ${s.description}` : ''}`, `     Versions:`, ...s.versions.map((v) => `        ${v}${v === s.default ? ' (D)' : ''}`), '']),
        );
      }),
    );

  compose
    .command('show <module>')
    .description('what a module does: layer, requirements, environment')
    .action(
      action(async (ctx, spec: string) => {
        const store = await ctx.store();
        const info = resolveSpec(spec, await availableModules(store));
        const mod = await store.get(info.fullName);
        const r = mod.record;
        return result({ fullName: mod.fullName, record: mod.cid, ...r }, () => [
          `${mod.fullName}  (record ${mod.cid})`,
          r.description ? `whatis("${r.description}")` : '',
          ...r.requires.map((q) => `depends_on("${q}")`),
          ...r.conflicts.map((q) => `conflict("${q}")`),
          r.family ? `family("${r.family}")` : '',
          r.restricted ? `-- restricted to group ${r.restricted}` : '',
          ...r.env.map((e) => `${{ prepend: 'prepend_path', append: 'append_path', set: 'setenv' }[e.op]}("${e.var}","${e.value}")`),
          `-- layer ${r.layer}`,
        ]);
      }),
    );

  compose
    .command('add <modules...>')
    .description('load modules into the stack (Lmod `module load`)')
    .action(action((ctx, specs: string[]) => change(ctx, (s, a) => add(s, specs, a, currentUser()))));
  compose
    .command('rm <modules...>')
    .description('unload modules and what only they required')
    .action(action((ctx, specs: string[]) => change(ctx, (s, a) => remove(s, specs, a))));
  compose
    .command('swap <a> <b>')
    .description('replace module A with B')
    .action(action((ctx, a: string, b: string) => change(ctx, (s, av) => swap(s, a, b, av, currentUser()))));
  compose
    .command('purge')
    .description('empty the stack')
    .action(action((ctx) => change(ctx, (s) => purge(s))));

  compose
    .command('list')
    .description('the modules in the stack')
    .action(
      action(async (ctx) => {
        const stack = await readStack(ctx.cwd);
        return result(stack, () =>
          stack.modules.length === 0
            ? 'No modules loaded'
            : ['Currently Loaded Modules:', ...stack.modules.map((m, i) => `  ${i + 1}) ${m.fullName}${m.auto ? ' (auto)' : ''}`)],
        );
      }),
    );

  compose
    .command('save [name]')
    .description('save the stack as a collection pinned to exact records')
    .action(
      action(async (ctx, name = 'default') => {
        const store = await ctx.store();
        const c = saveCollection(await readStack(ctx.cwd), await availableModules(store));
        await store.saveCollection(name, c);
        return result({ name, collection: c }, () => `Saved current collection of modules to: "${name}"`);
      }),
    );
  compose
    .command('restore [name]')
    .description('make the stack exactly the saved collection')
    .action(
      action(async (ctx, name = 'default') => {
        const store = await ctx.store();
        const c = await loadCollection(store, name);
        const r = restoreCollection(c, await availableModules(store), currentUser(), name);
        const lock = await writeStack(store, ctx.cwd, r.stack);
        return result({ stack: r.stack, lock }, undefined, { notes: r.messages });
      }),
    );
  compose
    .command('savelist')
    .description('saved collections')
    .action(
      action(async (ctx) => {
        const names = await (await ctx.store()).listCollections();
        return result(names, () => (names.length === 0 ? 'No named collections.' : ['Named collection list:', ...names.map((n, i) => `  ${i + 1}) ${n}`)]));
      }),
    );

  compose
    .command('lock')
    .description('print (or write) the lock of the stack')
    .option('-o, --output <file>', 'write it to FILE')
    .option('--cids', 'the plain hash list instead of the JSON lock')
    .action(
      action(async (ctx, o: { output?: string; cids?: boolean }) => {
        const store = await ctx.store();
        const lock = lockOf(await stackModules(store, await readStack(ctx.cwd)));
        const text = o.cids ? hashListText(lock) : lockText(lock);
        if (o.output) {
          await writeAtomic(o.output, text);
          return result({ written: o.output, lock }, () => `wrote ${o.output}`);
        }
        return result(lock, () => text.replace(/\n$/, '').split('\n'));
      }),
    );

  return compose;
}

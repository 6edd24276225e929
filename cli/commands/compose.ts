/**
 * `strata compose …` that edits or shows the stack, the Lmod way: load/add, unload/rm, swap,
 * purge, reset, list, avail, overview, spider, show, whatis, keyword, save, restore, savelist,
 * describe, disable, lock, diff. Lmod's `-t/--terse`, `--show_hidden` and `--force` work before
 * the verb (`strata compose -t avail`) or after it.
 */
import { Command, Option } from 'commander';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { diffLocks, formatDiff } from '../../compose/diff.js';
import { COMPOSE_ERR, StrataError } from '../../compose/errors.js';
import { hashListText, lockOf, lockText, parseLock, type Lock } from '../../compose/lock.js';
import { findSpec, type ModuleInfo } from '../../compose/resolve.js';
import { visibleModules } from '../../compose/hierarchy.js';
import {
  activeEntries,
  checkRequirementsMet,
  collectionContents,
  load,
  parseStack,
  purge,
  reset,
  restoreCollection,
  saveCollection,
  splitModuleList,
  swap,
  unload,
  type StackChange,
  type StackFile,
} from '../../compose/stack.js';
import {
  availLevels,
  formatAvail,
  formatDescribe,
  formatKeyword,
  formatList,
  formatOverview,
  formatSavelist,
  formatShow,
  formatSpider,
  formatWhatis,
  keywordMatches,
  spiderEntries,
  type ViewOptions,
} from '../../compose/views.js';
import { availableModules, currentUser, loadCollection, readStack, stackModules, STACK_FILE, writeAtomic, writeStack } from '../../compose/workspace.js';
import type { Store } from '../../store/index.js';
import type { Context } from '../context.js';
import { result, type Result } from '../output.js';
import type { Action } from './action.js';

interface LmodFlags {
  terse?: boolean;
  showHidden?: boolean;
  show_hidden?: boolean;
  force?: boolean;
}

/** Lmod's flags, wherever they were typed: on `compose` or on the verb. */
function flags(cmd: Command): LmodFlags & ViewOptions {
  const o = { ...(cmd.parent?.opts<LmodFlags>() ?? {}), ...cmd.opts<LmodFlags>() };
  return { terse: o.terse, showHidden: Boolean(o.showHidden || o.show_hidden), force: o.force, width: process.stdout.columns ?? 80 };
}

function lmodOptions(c: Command, which: Array<'terse' | 'hidden' | 'force'>): Command {
  if (which.includes('terse')) c.option('-t, --terse', 'one item a line, for scripts (Lmod -t)');
  if (which.includes('hidden')) {
    c.option('--show-hidden', 'include hidden modules, marked (H)');
    c.addOption(new Option('--show_hidden').hideHelp());
  }
  if (which.includes('force')) c.option('--force', 'sticky modules too');
  return c;
}

/** Applies a stack operation, writes strata.json and strata.lock, and reports its messages. */
async function change(ctx: Context, op: (stack: StackFile, available: ModuleInfo[]) => StackChange): Promise<Result> {
  const store = await ctx.store();
  const available = await availableModules(store);
  const r = op(await readStack(ctx.stackDir), available);
  const lock = await writeStack(store, ctx.stackDir, r.stack);
  return result({ stack: r.stack, messages: r.messages, lock }, undefined, { notes: r.messages });
}

/** The modules visible with the working stack loaded (the hierarchy levels it opens). */
function visibleNow(available: readonly ModuleInfo[], stack: StackFile): ModuleInfo[] {
  return visibleModules(
    available,
    activeEntries(stack).map((e) => ({ key: e.key ?? e.fullName, fullName: e.fullName })),
  );
}

/** Lmod's w_Failed_2_Find for whatis and show, in strata's terms (no MODULEPATH). */
function failedToFind(specs: readonly string[]): StrataError {
  return new StrataError(COMPOSE_ERR.NOT_FOUND, `Failed to find the following module(s): ${specs.map((s) => `"${s}"`).join(', ')} among the modules you can load now`, {
    hint: `Try: strata compose spider ${specs.join(' ')} to see if the module(s) are available across all compilers and MPI implementations.`,
  });
}

/** The lock a `diff` argument stands for: a lock file, a strata.json, or a directory holding one. */
async function lockFrom(store: () => Promise<Store>, cwd: string, arg: string): Promise<Lock> {
  let file = path.resolve(cwd, arg);
  const st = await fsp.stat(file).catch(() => undefined);
  if (!st) throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${arg} does not exist`, { hint: 'give two locks, stack files (strata.json) or working directories' });
  if (st.isDirectory()) file = path.join(file, STACK_FILE);
  const text = await fsp.readFile(file, 'utf8').catch(() => {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${arg} holds no ${STACK_FILE}`, { hint: 'give two locks, stack files (strata.json) or working directories' });
  });
  if (/"stackVersion"/.test(text)) {
    const s = await store();
    return lockOf(await stackModules(s, parseStack(text)));
  }
  return parseLock(text, arg);
}

export function composeCommands(program: Command, action: Action): Command {
  const compose = lmodOptions(program.command('compose').description('compose modules into a stack, the Lmod way, and build outputs'), [
    'terse',
    'hidden',
    'force',
  ]);
  // The root command hands `compose` every option it does not know, wherever it was typed, so
  // `compose sandbox DIR --force` reaches compose's --force: give it back to the verb.
  compose.hook('preSubcommand', (self, verb) => {
    if (self.opts<LmodFlags>().force && verb.options.some((o) => o.attributeName() === 'force')) verb.setOptionValue('force', true);
  });

  lmodOptions(compose.command('avail [patterns...]'), ['terse', 'hidden'])
    .description('modules you can load now: (D) default, (L) loaded, (R) restricted; PATTERN is a substring or a glob')
    .action(
      action(async (ctx, patterns: string[], _o: unknown, cmd: Command) => {
        const f = flags(cmd);
        const available = await availableModules(await ctx.store());
        const stack = await readStack(ctx.stackDir);
        return result(availLevels(available, stack, patterns, f), () => formatAvail(available, stack, patterns, f));
      }),
    );

  lmodOptions(compose.command('overview'), ['terse', 'hidden'])
    .description('each module name you can load now, with its number of versions')
    .action(
      action(async (ctx, _o: unknown, cmd: Command) => {
        const f = flags(cmd);
        const available = await availableModules(await ctx.store());
        const stack = await readStack(ctx.stackDir);
        return result(availLevels(available, stack, undefined, f), () => formatOverview(available, stack, f));
      }),
    );

  lmodOptions(compose.command('spider [pattern]'), ['terse', 'hidden'])
    .description('every module in the store (all hierarchy levels); NAME/VERSION says what to load first')
    .action(
      action(async (ctx, pattern: string | undefined, _o: unknown, cmd: Command) => {
        const f = flags(cmd);
        const available = await availableModules(await ctx.store());
        const lines = formatSpider(available, pattern, f);
        return result(spiderEntries(available, pattern, f), () => lines);
      }),
    );

  compose
    .command('show <module>')
    .description('what loading a module does, as modulefile statements')
    .action(
      action(async (ctx, spec: string) => {
        const store = await ctx.store();
        const available = await availableModules(store);
        const info = findSpec(spec, visibleNow(available, await readStack(ctx.stackDir)));
        if (!info) throw failedToFind([spec]);
        const mod = await store.get(info.key ?? info.fullName);
        return result({ fullName: info.fullName, key: mod.fullName, record: mod.cid, ...mod.record }, () => [
          `-- ${info.fullName}  (record ${mod.cid}, layer ${mod.record.layer})`,
          ...(mod.record.restricted ? [`-- restricted to group ${mod.record.restricted}`] : []),
          ...formatShow(info, mod.record.env),
        ]);
      }),
    );

  compose
    .command('whatis <modules...>')
    .description("modules' whatis lines (description, keywords)")
    .action(
      action(async (ctx, specs: string[]) => {
        const available = await availableModules(await ctx.store());
        const visible = visibleNow(available, await readStack(ctx.stackDir));
        const mods = specs.map((s) => findSpec(s, visible)).filter((m): m is ModuleInfo => m !== undefined);
        const lost = specs.filter((s) => findSpec(s, visible) === undefined);
        return result(mods, () => mods.flatMap((m) => formatWhatis(m)), lost.length > 0 ? { error: failedToFind(lost) } : {});
      }),
    );

  lmodOptions(compose.command('keyword <words...>'), ['terse', 'hidden'])
    .description('modules whose name or whatis text holds any of the words (the whole store)')
    .action(
      action(async (ctx, words: string[], _o: unknown, cmd: Command) => {
        const f = flags(cmd);
        const available = await availableModules(await ctx.store());
        return result(keywordMatches(available, words, f), () => formatKeyword(available, words, f));
      }),
    );

  compose
    .command('load <modules...>')
    .description('load modules into the stack (Lmod `module load`)')
    .action(action((ctx, specs: string[]) => change(ctx, (s, a) => load(s, specs, a, currentUser()))));
  compose
    .command('add <modules...>')
    .description('the same as load')
    .action(action((ctx, specs: string[]) => change(ctx, (s, a) => load(s, specs, a, currentUser()))));
  for (const verb of ['unload', 'rm']) {
    lmodOptions(compose.command(`${verb} <modules...>`), ['force'])
      .description(verb === 'unload' ? 'unload modules and what was loaded only for them (Lmod `module unload`)' : 'the same as unload')
      .action(action((ctx, specs: string[], _o: unknown, cmd: Command) => change(ctx, (s, a) => unload(s, specs, a, currentUser(), { force: flags(cmd).force }))));
  }
  compose
    .command('swap <a> [b]')
    .description('unload module A and load B (`swap B` alone: the loaded module of that name)')
    .action(action((ctx, a: string, b: string | undefined) => change(ctx, (s, av) => swap(s, a, b, av, currentUser()))));
  lmodOptions(compose.command('purge'), ['force'])
    .description('unload every module (sticky ones only with --force)')
    .action(action((ctx, _o: unknown, cmd: Command) => change(ctx, (s, a) => purge(s, a, { force: flags(cmd).force, user: currentUser() }))));
  compose
    .command('reset')
    .description('purge everything, then load $STRATA_SYSTEM_DEFAULT_MODULES (else $LMOD_SYSTEM_DEFAULT_MODULES)')
    .action(
      action((ctx) => {
        const defaults = splitModuleList(process.env.STRATA_SYSTEM_DEFAULT_MODULES ?? process.env.LMOD_SYSTEM_DEFAULT_MODULES ?? '');
        return change(ctx, (s, a) => reset(s, defaults, a, currentUser()));
      }),
    );

  lmodOptions(compose.command('list'), ['terse'])
    .description('the loaded modules in load order, then the inactive ones')
    .action(
      action(async (ctx, _o: unknown, cmd: Command) => {
        const stack = await readStack(ctx.stackDir);
        const available = await availableModules(await ctx.store());
        return result(stack, () => formatList(stack, available, flags(cmd)));
      }),
    );

  lmodOptions(compose.command('save [name]'), ['force'])
    .description('save the stack as a collection pinned to exact records (an empty one only with --force)')
    .action(
      action(async (ctx, name: string | undefined, _o: unknown, cmd: Command) => {
        name ??= 'default';
        const store = await ctx.store();
        const stack = await readStack(ctx.stackDir);
        if (activeEntries(stack).length === 0 && !flags(cmd).force) {
          throw new StrataError(COMPOSE_ERR.STACK_EMPTY, `You are trying to save an empty collection of modules in "${name}". If this is what you want then enter: $ strata compose --force save ${name}`);
        }
        const c = saveCollection(stack, await availableModules(store));
        await store.saveCollection(name, c);
        return result({ name, collection: c }, () => `Saved current collection of modules to: "${name}"`);
      }),
    );
  compose
    .command('restore [name]')
    .description('make the stack exactly the saved collection (none saved as default: reset)')
    .action(
      action(async (ctx, name: string | undefined) => {
        const store = await ctx.store();
        if (name === undefined && (await store.loadCollection('default')) === undefined) {
          const defaults = splitModuleList(process.env.STRATA_SYSTEM_DEFAULT_MODULES ?? process.env.LMOD_SYSTEM_DEFAULT_MODULES ?? '');
          return change(ctx, (s, a) => reset(s, defaults, a, currentUser()));
        }
        const c = await loadCollection(store, name ?? 'default');
        const r = restoreCollection(c, await availableModules(store), currentUser(), name ?? 'default');
        const lock = await writeStack(store, ctx.stackDir, r.stack);
        return result({ stack: r.stack, lock }, undefined, { notes: r.messages });
      }),
    );
  lmodOptions(compose.command('savelist'), ['terse'])
    .description('saved collections')
    .action(
      action(async (ctx, _o: unknown, cmd: Command) => {
        const names = await (await ctx.store()).listCollections();
        return result(names, () => formatSavelist(names, flags(cmd)));
      }),
    );
  lmodOptions(compose.command('describe [name]'), ['terse'])
    .description('the modules a saved collection holds')
    .action(
      action(async (ctx, name: string | undefined, _o: unknown, cmd: Command) => {
        const store = await ctx.store();
        const n = name ?? 'default';
        const c = await store.loadCollection(n);
        if (c === undefined) throw new StrataError(COMPOSE_ERR.NOT_FOUND, `No collection named "${n}" found.`, { hint: 'see strata compose savelist' });
        const contents = collectionContents(c, await availableModules(store));
        return result({ name: n, modules: contents, collection: c }, () => formatDescribe(n, contents, flags(cmd)));
      }),
    );
  compose
    .command('disable [name]')
    .description('remove a saved collection')
    .action(
      action(async (ctx, name: string | undefined) => {
        const n = name ?? 'default';
        if (!(await (await ctx.store()).removeCollection(n))) {
          throw new StrataError(COMPOSE_ERR.NOT_FOUND, `No collection named "${n}" found.`, { hint: 'see strata compose savelist' });
        }
        return result({ disabled: n }, undefined, { notes: [`Disabling ${n} collection (removed; its records are no longer pinned)`] });
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
        const stack = await readStack(ctx.stackDir);
        checkRequirementsMet(stack, await availableModules(store));
        const lock = lockOf(await stackModules(store, stack));
        const text = o.cids ? hashListText(lock) : lockText(lock);
        if (o.output) {
          await writeAtomic(o.output, text);
          return result({ written: o.output, lock }, () => `wrote ${o.output}`);
        }
        return result(lock, () => text.replace(/\n$/, '').split('\n'));
      }),
    );

  compose
    .command('diff <a> <b>')
    .description('what differs between two locks or stacks (files, or directories holding strata.json): modules and environment')
    .action(
      action(async (ctx, a: string, b: string) => {
        const store = () => ctx.store();
        const la = await lockFrom(store, ctx.cwd, a);
        const lb = await lockFrom(store, ctx.cwd, b);
        // Module names come from the records when this store has them (hierarchy builds keep their name under new parents).
        const names = new Map<string, string>();
        for (const m of [...la.modules, ...lb.modules]) {
          const r = await (await store()).loadRecord(m.record, m.fullName).catch(() => undefined);
          if (r) names.set(m.record, r.name);
        }
        const d = diffLocks(la, lb, (f, rec) => names.get(rec) ?? f.slice(0, Math.max(f.lastIndexOf('/'), 0)) ?? f);
        return result(d, () => formatDiff(d, a, b));
      }),
    );

  return compose;
}

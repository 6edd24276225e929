/**
 * The Lmod rules as pure functions (compose/resolve.ts, hierarchy.ts, stack.ts, views.ts,
 * diff.ts) on a catalogue given in the test. The differential suite (test/lmod/) checks the same
 * rules against the real Lmod; these cover what it cannot: access, cycles, requirement checks of
 * outputs, collections pinned to records, strata.json and its schema, the lock diff.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { StrataError } from '../native/errors.js';
import { COMPOSE_ERR as ERR } from '../compose/errors.js';
import { STORE_ERR } from '../store/errors.js';
import { parseCollection, serializeCollection } from '../store/collections.js';
import { checkAccess, findSpec, keyOf, mayLoad, resolveSpec, snOf, type ModuleInfo, type User } from '../compose/resolve.js';
import { openLevels, reachable, visibleLevels, visibleModules } from '../compose/hierarchy.js';
import {
  checkRequirementsMet,
  emptyStack,
  layerOrder,
  load,
  parseStack,
  purge,
  restoreCollection,
  saveCollection,
  serializeStack,
  swap,
  unload,
  validateStack,
  type StackFile,
} from '../compose/stack.js';
import { formatAvail, formatSpider, patternMatches, spiderEntries } from '../compose/views.js';
import { composedEnv, diffLocks } from '../compose/diff.js';
import { splitFullName } from '../compose/version-order.js';

// ---------------------------------------------------------------------------------------
// Fixtures: a small site catalogue, as the store would hand it to the composer.

function mod(fullName: string, o: Partial<Omit<ModuleInfo, 'fullName' | 'name' | 'version'>> = {}): ModuleInfo {
  const { name, version } = splitFullName(fullName);
  const key = [...(o.parents ?? []), fullName].join('/');
  return {
    ...o,
    ...(o.parents ? { key } : {}),
    fullName,
    name,
    version,
    record: o.record ?? `bagaaiera-${key.replace(/\//g, '-')}`,
    requires: o.requires ?? [],
    conflicts: o.conflicts ?? [],
    family: o.family ?? null,
    restricted: o.restricted ?? null,
    isDefault: o.isDefault ?? false,
  };
}

const AVAILABLE: ModuleInfo[] = [
  mod('gcc/11.4', { family: 'compiler' }),
  mod('gcc/12.3', { family: 'compiler', description: 'GNU compilers' }),
  mod('intel/2023.1', { family: 'compiler' }),
  mod('zlib/1.3'),
  mod('openmpi/4.1.5', { requires: ['gcc'] }),
  mod('openmpi/4.1.6', { requires: ['gcc'], isDefault: true }),
  mod('openmpi/5.0.0rc1', { requires: ['gcc'] }),
  mod('hdf5/1.14.3', { requires: ['openmpi', 'zlib'] }),
  mod('broken/1', { requires: ['nonexistent'] }),
  mod('ansys/2024.1', { restricted: 'ansys-users' }),
  mod('fluent-wrapper/1', { requires: ['ansys'] }),
  mod('cuda/12.2', { conflicts: ['rocm'] }),
  mod('rocm/6.0'),
  mod('python/3.9.6', { isDefault: true }),
  mod('python/3.11.4'),
  mod('cmake/3.9'),
  mod('cmake/3.28.0rc1'),
  mod('cmake/3.28.0'),
  mod('tools/a/1.0'),
  mod('tools/a/2.0'),
  mod('cyc-a/1', { requires: ['cyc-b'] }),
  mod('cyc-b/1', { requires: ['cyc-a'] }),
  mod('intel-tool/1', { family: 'compiler', requires: ['gcc'] }),
  mod('secret/1'),
  mod('secret/2', { hidden: true }),
  mod('site/1', { sticky: true }),
  // the hierarchy
  mod('mpi/openmpi-4.1', { parents: ['gcc/12.3'], family: 'mpi' }),
  mod('mpi/openmpi-4.1', { parents: ['gcc/11.4'], family: 'mpi' }),
  mod('netcdf/4.9', { parents: ['gcc/12.3', 'mpi/openmpi-4.1'] }),
  mod('orphan/1', { parents: ['pgi/1'] }),
];

const ALICE: User = { name: 'alice', uid: 1000, groups: ['users'] };
const BOB: User = { name: 'bob', uid: 1001, groups: ['users', 'ansys-users'] };
const ROOT: User = { name: 'root', uid: 0, groups: ['root'] };

function stackOf(...entries: Array<string | [string, true]>): StackFile {
  return {
    stackVersion: 1,
    modules: entries.map((e) => (typeof e === 'string' ? { fullName: e } : { fullName: e[0], auto: true })),
  };
}

function names(s: StackFile): string[] {
  return s.modules.map((e) => (e.auto ? `${e.fullName}*` : e.fullName));
}

function throwsCode(fn: () => unknown, code: string, message?: string): StrataError {
  try {
    fn();
  } catch (e) {
    assert.instance(e, StrataError);
    const se = e as StrataError;
    assert.is(se.code, code, se.message);
    if (message !== undefined) assert.is(se.message, message);
    return se;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

/** Enough of JSON Schema 2020-12 for spec/*.schema.json: returns the first violation. */
function schemaViolation(schema: any, v: unknown, root: any = schema, at = '$'): string | undefined {
  if (schema.$ref) return schemaViolation(root.$defs[schema.$ref.replace('#/$defs/', '')], v, root, at);
  if ('const' in schema && v !== schema.const) return `${at}: not ${JSON.stringify(schema.const)}`;
  const t = schema.type;
  if (t === 'object') {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return `${at}: not an object`;
    const o = v as Record<string, unknown>;
    for (const k of schema.required ?? []) if (!(k in o)) return `${at}: ${k} missing`;
    for (const [k, x] of Object.entries(o)) {
      if (!schema.properties?.[k]) {
        if (schema.additionalProperties === false) return `${at}: ${k} not allowed`;
        continue;
      }
      const bad = schemaViolation(schema.properties[k], x, root, `${at}.${k}`);
      if (bad) return bad;
    }
  } else if (t === 'array') {
    if (!Array.isArray(v)) return `${at}: not an array`;
    if (schema.minItems !== undefined && v.length < schema.minItems) return `${at}: too short`;
    if (schema.uniqueItems && new Set(v.map((x) => JSON.stringify(x))).size !== v.length) return `${at}: duplicates`;
    for (let i = 0; i < v.length; i++) {
      const bad = schemaViolation(schema.items, v[i], root, `${at}[${i}]`);
      if (bad) return bad;
    }
  } else if (t === 'string') {
    if (typeof v !== 'string') return `${at}: not a string`;
    if (schema.minLength !== undefined && v.length < schema.minLength) return `${at}: too short`;
  } else if (t === 'boolean') {
    if (typeof v !== 'boolean') return `${at}: not a boolean`;
  }
  return undefined;
}

/** spec/ sits beside test/ in the source tree; the compiled tests run from dist/test/. */
function readSpec(file: string): any {
  for (const up of ['../spec/', '../../spec/']) {
    const u = new URL(up + file, import.meta.url);
    if (existsSync(u)) return JSON.parse(readFileSync(u, 'utf8'));
  }
  throw new Error(`spec/${file} not found`);
}

const STACK_SCHEMA = readSpec('stack.schema.json');

// ---------------------------------------------------------------------------------------

const resolve = suite('resolution');

resolve('exact fullName, name, partial version; leading parts of a longer name are not modules', () => {
  const v = visibleModules(AVAILABLE, []);
  assert.is(resolveSpec('gcc/11.4', v).fullName, 'gcc/11.4');
  assert.is(resolveSpec('python', v).fullName, 'python/3.9.6', 'the marked default wins');
  assert.is(resolveSpec('cmake', v).fullName, 'cmake/3.28.0', 'else the highest, rc below the release');
  assert.is(resolveSpec('openmpi/5', v).fullName, 'openmpi/5.0.0rc1');
  assert.is(resolveSpec('openmpi/4.1', v).fullName, 'openmpi/4.1.6');
  assert.is(findSpec('python/3.1', v), undefined, 'never 3.11.4 for 3.1');
  assert.is(findSpec('tools', v), undefined);
  assert.is(resolveSpec('tools/a', v).fullName, 'tools/a/2.0');
  const e = throwsCode(() => resolveSpec('nosuch/1', v), ERR.NOT_FOUND, 'Lmod has detected the following error: The following module(s) are unknown: "nosuch/1"');
  assert.match(e.hint ?? '', 'strata compose spider nosuch');
});

resolve('hidden modules: never a default, found by their full name', () => {
  const v = visibleModules(AVAILABLE, []);
  assert.is(resolveSpec('secret', v).fullName, 'secret/1');
  assert.is(resolveSpec('secret/2', v).fullName, 'secret/2');
});

resolve('the hierarchy: levels open with their parents; the newest level first', () => {
  assert.equal(openLevels([{ fullName: 'gcc/12.3' }, { key: 'gcc/12.3/mpi/openmpi-4.1', fullName: 'mpi/openmpi-4.1' }]), ['gcc/12.3/mpi/openmpi-4.1', 'gcc/12.3', '']);
  assert.is(findSpec('mpi', visibleModules(AVAILABLE, [])), undefined);
  throwsCode(
    () => resolveSpec('netcdf', visibleModules(AVAILABLE, []), AVAILABLE),
    ERR.NOT_FOUND,
    'Lmod has detected the following error: These module(s) or extension(s) exist but cannot be loaded as requested: "netcdf"',
  );
  const under12 = visibleModules(AVAILABLE, [{ fullName: 'gcc/12.3' }]);
  assert.is(keyOf(resolveSpec('mpi', under12)), 'gcc/12.3/mpi/openmpi-4.1');
  const under11 = visibleModules(AVAILABLE, [{ fullName: 'gcc/11.4' }]);
  assert.is(keyOf(resolveSpec('mpi', under11)), 'gcc/11.4/mpi/openmpi-4.1');
  assert.equal(visibleLevels(AVAILABLE, [{ fullName: 'gcc/12.3' }]).map((l) => l.level), ['gcc/12.3', '']);
  assert.not.ok(reachable(AVAILABLE.find((m) => m.name === 'orphan')!, AVAILABLE), 'pgi/1 is in no store');
});

resolve('snOf: the name a requirement is about', () => {
  assert.is(snOf('gcc/11.4', AVAILABLE), 'gcc');
  assert.is(snOf('tools/a', AVAILABLE), 'tools/a');
  assert.is(snOf('gcc', AVAILABLE), 'gcc');
});

resolve('access: group members and root only', () => {
  const ansys = AVAILABLE.find((m) => m.name === 'ansys')!;
  assert.not.ok(mayLoad(ansys, ALICE));
  assert.ok(mayLoad(ansys, BOB));
  assert.ok(mayLoad(ansys, ROOT));
  throwsCode(() => checkAccess(ansys, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
});

resolve('avail patterns: substrings, and globs with * and ?', () => {
  assert.ok(patternMatches('mpi/openmpi-4.1', 'MPI'));
  assert.ok(patternMatches('mpich/3', 'mpi*'));
  assert.ok(patternMatches('mpi/openmpi-4.1', 'mpi*'));
  assert.not.ok(patternMatches('ompi/4.1', 'mpi*'), 'a glob is anchored');
  assert.ok(patternMatches('ompi/4.1', '*mpi*'));
  assert.ok(patternMatches('gcc/12.3', 'gcc/1?.3'));
  assert.not.ok(patternMatches('gcc/12.3', 'gcc/1.3'));
});

resolve.run();

// ---------------------------------------------------------------------------------------

const ops = suite('load, unload, swap, purge');

ops('requirements are loaded first, for the module, and go with it; nothing is said', () => {
  const r = load(emptyStack(), ['hdf5'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'zlib/1.3*', 'hdf5/1.14.3']);
  assert.equal(r.messages, []);
  assert.equal(r.stack.modules[1]!.requiredBy, ['hdf5/1.14.3']);
  assert.equal(r.stack.modules[1]!.userName, 'openmpi', 'the name it was required by');
  const u = unload(r.stack, ['hdf5'], AVAILABLE);
  assert.equal(names(u.stack), []);
  assert.equal(u.messages, []);
});

ops('a loaded module loaded again moves to the end; the user\'s modules stay the user\'s', () => {
  const s = load(emptyStack(), ['zlib', 'hdf5'], AVAILABLE, ALICE).stack;
  assert.equal(names(s), ['zlib/1.3', 'gcc/12.3*', 'openmpi/4.1.6*', 'hdf5/1.14.3']);
  const again = load(s, ['zlib'], AVAILABLE, ALICE).stack;
  assert.equal(names(again), ['gcc/12.3*', 'openmpi/4.1.6*', 'hdf5/1.14.3', 'zlib/1.3']);
  assert.equal(layerOrder(again, AVAILABLE).map((m) => m.fullName), ['gcc/12.3', 'openmpi/4.1.6', 'hdf5/1.14.3', 'zlib/1.3'], 'the lock follows load order');
  assert.equal(names(unload(again, ['hdf5'], AVAILABLE).stack), ['zlib/1.3']);
});

ops('all or nothing: an unknown spec, a conflict, a cycle, access, a missing prereq', () => {
  const s = load(emptyStack(), ['rocm'], AVAILABLE, ALICE).stack;
  throwsCode(() => load(s, ['zlib', 'nosuch'], AVAILABLE, ALICE), ERR.NOT_FOUND);
  const c = throwsCode(() => load(s, ['zlib', 'cuda'], AVAILABLE, ALICE), ERR.CONFLICT);
  assert.is(c.message, 'Lmod has detected the following error: Cannot load module "cuda/12.2" because these module(s) are loaded: rocm');
  const d = throwsCode(() => load(load(emptyStack(), ['cuda'], AVAILABLE, ALICE).stack, ['rocm'], AVAILABLE, ALICE), ERR.CONFLICT);
  assert.match(d.message, 'because this module set a conflict: "cuda/12.2"');
  assert.match(d.hint ?? '', 'Lmod checks only the module being loaded');
  throwsCode(() => load(s, ['cyc-a'], AVAILABLE, ALICE), ERR.REQUIRE_CYCLE, 'Module requirements form a cycle: cyc-a -> cyc-b -> cyc-a');
  // One version requiring another of its own name is no loop: a conflict, said as such.
  const selfish = [...AVAILABLE, mod('gcc/9', {}), mod('gcc/99', { requires: ['gcc/9'] })];
  throwsCode(() => load(s, ['gcc/99'], selfish, ALICE), ERR.CONFLICT, 'gcc/99 requires gcc/9, another version of the same module');
  throwsCode(() => load(s, ['fluent-wrapper'], AVAILABLE, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
  assert.equal(names(load(s, ['fluent-wrapper'], AVAILABLE, BOB).stack), ['rocm/6.0', 'ansys/2024.1*', 'fluent-wrapper/1']);
  const b = throwsCode(() => load(s, ['broken'], AVAILABLE, ALICE), ERR.NOT_FOUND);
  assert.match(b.hint ?? '', 'required by broken/1');
  throwsCode(() => load(s, ['intel-tool'], AVAILABLE, ALICE), ERR.CONFLICT);
  const prereq = [...AVAILABLE, mod('plugin/1', { prereq: ['zlib'] })];
  throwsCode(() => load(s, ['plugin'], prereq, ALICE), ERR.NOT_FOUND, 'Lmod has detected the following error: Cannot load module "plugin/1" without these module(s) loaded: zlib');
  assert.equal(names(load(s, ['zlib', 'plugin'], prereq, ALICE).stack), ['rocm/6.0', 'zlib/1.3', 'plugin/1']);
});

ops('unload: names and exact fullNames only; sticky modules stay unless forced', () => {
  const s = load(emptyStack(), ['gcc/12.3', 'site'], AVAILABLE, ALICE).stack;
  assert.equal(names(unload(s, ['gcc/12', 'gcc/11.4', 'nosuch'], AVAILABLE).stack), ['gcc/12.3', 'site/1']);
  const kept = unload(s, ['site', 'gcc'], AVAILABLE);
  assert.equal(names(kept.stack), ['site/1']);
  assert.match(kept.messages.join('\n'), 'The following modules were not unloaded:');
  assert.equal(names(unload(s, ['site'], AVAILABLE, ALICE, { force: true }).stack), ['gcc/12.3']);
  assert.equal(names(purge(s, AVAILABLE).stack), ['site/1']);
  assert.equal(purge(s, AVAILABLE, { force: true }).stack, emptyStack());
});

ops('swap: the version-change report; a module not loaded fails', () => {
  const s = load(emptyStack(), ['gcc/11.4', 'zlib'], AVAILABLE, ALICE).stack;
  const r = swap(s, 'gcc', 'gcc/12.3', AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['zlib/1.3', 'gcc/12.3']);
  assert.equal(r.messages, ['The following have been reloaded with a version change:\n  1) gcc/11.4 => gcc/12.3']);
  throwsCode(() => swap(s, 'rocm', 'cuda', AVAILABLE, ALICE), ERR.NOT_FOUND, 'Lmod has detected the following error: Swap failed: "rocm" is not loaded.');
});

ops('the hierarchy: a compiler swap reloads the MPI build; a missing build goes inactive and comes back', () => {
  const s = load(emptyStack(), ['gcc/12.3', 'mpi', 'netcdf'], AVAILABLE, ALICE).stack;
  assert.equal(s.modules.map((e) => e.key ?? e.fullName), ['gcc/12.3', 'gcc/12.3/mpi/openmpi-4.1', 'gcc/12.3/mpi/openmpi-4.1/netcdf/4.9']);
  const r = swap(s, 'gcc', 'gcc/11.4', AVAILABLE, ALICE);
  assert.equal(r.stack.modules.map((e) => `${e.key ?? e.fullName}${e.inactive ? ' (inactive)' : ''}`), ['gcc/11.4', 'gcc/11.4/mpi/openmpi-4.1', 'gcc/12.3/mpi/openmpi-4.1/netcdf/4.9 (inactive)']);
  assert.equal(r.messages, [
    'Inactive Modules:\n  1) netcdf',
    'Due to MODULEPATH changes, the following have been reloaded:\n  1) mpi/openmpi-4.1',
    'The following have been reloaded with a version change:\n  1) gcc/12.3 => gcc/11.4',
  ]);
  assert.equal(layerOrder(r.stack, AVAILABLE).map((m) => m.fullName), ['gcc/11.4', 'mpi/openmpi-4.1'], 'inactive modules are not in the lock');
  const back = swap(r.stack, 'gcc', 'gcc/12.3', AVAILABLE, ALICE);
  assert.equal(back.stack.modules.map((e) => e.key ?? e.fullName), ['gcc/12.3', 'gcc/12.3/mpi/openmpi-4.1', 'gcc/12.3/mpi/openmpi-4.1/netcdf/4.9']);
  assert.match(back.messages[0]!, 'Activating Modules:\n  1) netcdf/4.9');
});

ops.run();

// ---------------------------------------------------------------------------------------

const outputs = suite('requirements of a stack that is built');

outputs('met requirements pass; each unmet one is named in one line', () => {
  const ok = load(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack;
  checkRequirementsMet(ok, AVAILABLE);
  // openmpi removed from the store (strata store rm): its entry is gone, and hdf5 needs it.
  const e = throwsCode(() => checkRequirementsMet(ok, AVAILABLE.filter((m) => m.name !== 'openmpi')), ERR.NOT_FOUND);
  assert.match(e.message, 'openmpi/4.1.6, which is no longer in the store');
  // A requirement swapped out from under the module that needs it.
  const swapped = unload(ok, ['gcc'], AVAILABLE).stack;
  const u = throwsCode(() => checkRequirementsMet(swapped, AVAILABLE), ERR.REQUIREMENTS_UNMET);
  assert.is(u.message, "the stack's requirements are not met: openmpi/4.1.6 needs gcc");
  assert.match(u.hint ?? '', 'strata compose load gcc');
  const app = [...AVAILABLE, mod('app/1', { requires: ['openmpi/4.1.5'] })];
  const v = { stackVersion: 1 as const, modules: [{ fullName: 'gcc/12.3' }, { fullName: 'openmpi/4.1.6' }, { fullName: 'app/1' }] };
  assert.is(throwsCode(() => checkRequirementsMet(v, app), ERR.REQUIREMENTS_UNMET).message, "the stack's requirements are not met: app/1 needs openmpi/4.1.5 (openmpi/4.1.6 is loaded)");
  const orphan = { stackVersion: 1 as const, modules: [{ fullName: 'netcdf/4.9', key: 'gcc/12.3/mpi/openmpi-4.1/netcdf/4.9' }] };
  assert.match(throwsCode(() => checkRequirementsMet(orphan, AVAILABLE), ERR.REQUIREMENTS_UNMET).message, 'netcdf/4.9 is built under gcc/12.3, which is not loaded');
});

outputs.run();

// ---------------------------------------------------------------------------------------

const views = suite('avail and spider');

views('avail: one block per open level, markers and legend', () => {
  const s = load(emptyStack(), ['gcc/12.3', 'site'], AVAILABLE, ALICE).stack;
  const lines = formatAvail(AVAILABLE, s, ['mpi/o', 'gcc', 'site', 'secret'], { width: 60 });
  assert.equal(lines, [
    '------------------------ gcc/12.3 -------------------------',
    '   mpi/openmpi-4.1',
    '',
    '---------------------- strata store -----------------------',
    '   gcc/11.4    gcc/12.3 (L,D)    secret/1    site/1 (S,L)',
    '',
    '  Where:',
    '   D:  Default Module',
    '   L:  Module is loaded',
    '   S:  Module is Sticky, requires --force to unload or purge',
  ]);
  assert.equal(formatAvail(AVAILABLE, s, 'secret', { terse: true, showHidden: true }), ['strata store:', 'secret/1', 'secret/2']);
  assert.equal(formatAvail(AVAILABLE, s, 'nothing-like-it'), ['No module(s) or extension(s) found!']);
});

views('spider: every build with what to load first; nothing found is an error', () => {
  const e = spiderEntries(AVAILABLE, 'openmpi-4.1');
  assert.equal(e.map((x) => [x.name, x.builds.map((b) => b.loadFirst.join(' ')).sort()]), [['mpi', ['gcc/11.4', 'gcc/12.3']]]);
  const lines = formatSpider(AVAILABLE, 'mpi/openmpi-4.1');
  assert.ok(lines.includes('      gcc/11.4') && lines.includes('      gcc/12.3'), lines.join('\n'));
  assert.ok(formatSpider(AVAILABLE, 'zlib/1.3').some((l) => l.includes('This module can be loaded directly: strata compose load zlib/1.3')));
  assert.not.ok(spiderEntries(AVAILABLE).some((x) => x.name === 'orphan'), 'a build whose parents cannot be loaded');
  throwsCode(() => formatSpider(AVAILABLE, 'zzz'), ERR.NOT_FOUND, 'Lmod has detected the following error: Unable to find: "zzz".');
});

views.run();

// ---------------------------------------------------------------------------------------

const diff = suite('compose diff');

diff('modules added, removed, changed; the environment composed per variable', () => {
  const lock = (mods: Array<[string, string]>, env: Array<[string, string, string]>) => ({
    lockfileVersion: 1 as const,
    modules: mods.map(([fullName, record]) => ({ fullName, record, layer: 'l', manifest: 'm' })),
    env: env.map(([op, v, value]) => ({ op: op as 'prepend', var: v, value })),
  });
  const a = lock([['gcc/12.3', 'r1'], ['zlib/1.3', 'r2'], ['rocm/6.0', 'r3']], [['prepend', 'PATH', '/opt/gcc12'], ['set', 'X', '1']]);
  const b = lock([['gcc/11.4', 'r4'], ['zlib/1.3', 'r5'], ['cuda/12.2', 'r6']], [['prepend', 'PATH', '/opt/gcc11'], ['append', 'PATH', '/opt/z']]);
  const d = diffLocks(a, b);
  assert.equal(d.added, ['cuda/12.2']);
  assert.equal(d.removed, ['rocm/6.0']);
  assert.equal(d.changed.map((c) => `${c.from} => ${c.to}`), ['zlib/1.3 => zlib/1.3', 'gcc/12.3 => gcc/11.4']);
  assert.equal(d.env, [
    { var: 'PATH', from: '/opt/gcc12:$PATH', to: '/opt/gcc11:$PATH:/opt/z' },
    { var: 'X', from: '1', to: null },
  ]);
  assert.not.ok(d.same);
  assert.ok(diffLocks(a, a).same);
  assert.ok(diffLocks(a, lock([['zlib/1.3', 'r2'], ['gcc/12.3', 'r1'], ['rocm/6.0', 'r3']], [['prepend', 'PATH', '/opt/gcc12'], ['set', 'X', '1']])).reordered);
  assert.equal([...composedEnv([{ op: 'set', var: 'A', value: 'x' }, { op: 'prepend', var: 'A', value: 'y' }])], [['A', 'y:x']]);
});

diff.run();

// ---------------------------------------------------------------------------------------

const collections = suite('collections and strata.json');

collections('save pins record CIDs by store name; restore gives the same stack', () => {
  const s = load(emptyStack(), ['zlib', 'gcc/12.3', 'mpi'], AVAILABLE, ALICE).stack;
  const c = saveCollection(s, AVAILABLE);
  assert.equal(c.modules, [
    { fullName: 'zlib/1.3', record: 'bagaaiera-zlib-1.3' },
    { fullName: 'gcc/12.3', record: 'bagaaiera-gcc-12.3' },
    { fullName: 'gcc/12.3/mpi/openmpi-4.1', record: 'bagaaiera-gcc-12.3-mpi-openmpi-4.1' },
  ]);
  const collectionSchema = { $ref: '#/$defs/collection' };
  assert.is(schemaViolation(collectionSchema, JSON.parse(serializeCollection(c)), STACK_SCHEMA), undefined);
  assert.ok(schemaViolation(collectionSchema, { collectionVersion: 1, modules: [{ fullName: 'zlib/1.3' }] }, STACK_SCHEMA));
  assert.equal(parseCollection(serializeCollection(c), 'default'), c);
  throwsCode(() => parseCollection(JSON.stringify({ collectionVersion: 2, modules: [] }), 'default'), STORE_ERR.RECORD_INVALID);
  const r = restoreCollection(c, AVAILABLE, ALICE, 'mpi-work');
  assert.equal(layerOrder(r.stack, AVAILABLE), layerOrder(s, AVAILABLE));
  assert.equal(r.messages, ["Restoring modules from user's mpi-work"]);
});

collections('restore refuses when a pinned record changed or is gone; checks access', () => {
  const c = saveCollection(load(emptyStack(), ['zlib', 'gcc/12.3'], AVAILABLE, ALICE).stack, AVAILABLE);
  const reimported = AVAILABLE.map((m) => (m.fullName === 'gcc/12.3' ? { ...m, record: 'bagaaiera-gcc-12.3-rebuilt' } : m));
  const e = throwsCode(() => restoreCollection(c, reimported, ALICE), ERR.NOT_FOUND, 'One or more modules in your default collection have changed: "gcc/12.3".');
  assert.match(e.hint ?? '', 'strata restores the exact records it saved');
  const a = saveCollection({ stackVersion: 1, modules: [{ fullName: 'ansys/2024.1' }] }, AVAILABLE);
  throwsCode(() => restoreCollection(a, AVAILABLE, ALICE), ERR.ACCESS_DENIED);
  assert.equal(restoreCollection({ collectionVersion: 1, modules: [] }, AVAILABLE, ALICE, 'blank').messages[1], 'You have no modules loaded because the collection "blank" is empty!');
});

collections('strata.json round-trips and matches spec/stack.schema.json', () => {
  const s = swap(load(emptyStack(), ['gcc/12.3', 'mpi', 'netcdf', 'hdf5'], AVAILABLE, ALICE).stack, 'gcc', 'gcc/11.4', AVAILABLE, ALICE).stack;
  assert.ok(s.modules.some((e) => e.inactive) && s.modules.some((e) => e.key) && s.modules.some((e) => e.userName) && s.modules.some((e) => e.auto));
  const text = serializeStack(s);
  assert.ok(text.endsWith('}\n'));
  assert.equal(parseStack(text), s);
  assert.is(schemaViolation(STACK_SCHEMA, JSON.parse(text)), undefined);
  assert.is(schemaViolation(STACK_SCHEMA, JSON.parse(serializeStack(emptyStack()))), undefined);
});

collections('invalid strata.json is refused by the parser and by the schema', () => {
  const bad: unknown[] = [
    { stackVersion: 2, modules: [] },
    { stackVersion: 1 },
    { stackVersion: 1, modules: [{ fullName: '' }] },
    { stackVersion: 1, modules: [{ fullName: 'gcc/12.3', extra: 1 }] },
    { stackVersion: 1, modules: [{ fullName: 'gcc/12.3', auto: 'yes' }] },
    { stackVersion: 1, modules: [{ fullName: 'gcc/12.3', inactive: 1 }] },
    { stackVersion: 1, modules: [{ fullName: 'gcc/12.3', key: '' }] },
    { stackVersion: 1, modules: [], more: true },
  ];
  for (const b of bad) {
    throwsCode(() => validateStack(b), ERR.STACK_INVALID);
    assert.ok(schemaViolation(STACK_SCHEMA, b), JSON.stringify(b));
  }
  throwsCode(
    () => validateStack({ stackVersion: 1, modules: [{ fullName: 'gcc/11.4' }, { fullName: 'gcc/12.3' }] }),
    ERR.STACK_INVALID,
    'strata.json is not a strata stack file: gcc is listed twice (one module of a name at a time)',
  );
  throwsCode(() => parseStack('{"stackVersion": 1, "modules": ['), ERR.STACK_INVALID);
});

collections.run();

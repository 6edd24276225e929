import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { StrataError } from '../native/errors.js';
import { COMPOSE_ERR as ERR } from '../compose/errors.js';
import { STORE_ERR } from '../store/errors.js';
import { parseCollection, serializeCollection } from '../store/collections.js';
import {
  checkAccess,
  defaultOf,
  formatAvail,
  matchesSpec,
  mayLoad,
  resolveSpec,
  spider,
  type ModuleInfo,
  type User,
} from '../compose/resolve.js';
import {
  add,
  emptyStack,
  layerOrder,
  parseStack,
  purge,
  remove,
  restoreCollection,
  saveCollection,
  serializeStack,
  swap,
  validateStack,
  type StackFile,
} from '../compose/stack.js';
import { splitFullName } from '../compose/version-order.js';

// ---------------------------------------------------------------------------------------
// Fixtures: a small site catalogue, as the store would hand it to the composer.

function mod(fullName: string, o: Partial<Omit<ModuleInfo, 'fullName' | 'name' | 'version'>> = {}): ModuleInfo {
  const { name, version } = splitFullName(fullName);
  return {
    fullName,
    name,
    version,
    record: o.record ?? `bagaaiera-${fullName.replace(/\//g, '-')}`,
    requires: o.requires ?? [],
    conflicts: o.conflicts ?? [],
    family: o.family ?? null,
    restricted: o.restricted ?? null,
    isDefault: o.isDefault ?? false,
    ...(o.description !== undefined ? { description: o.description } : {}),
  };
}

const AVAILABLE: ModuleInfo[] = [
  mod('gcc/11.4', { family: 'compiler' }),
  mod('gcc/12.3', { family: 'compiler', description: 'GNU compilers' }),
  mod('intel/2023.1', { family: 'compiler' }),
  mod('mpi/openmpi-2'),
  mod('mpi/openmpi-10'),
  mod('mpi/mpich-3'),
  mod('openmpi/4.1.5', { requires: ['gcc'] }),
  mod('openmpi/4.1.6', { requires: ['gcc'], isDefault: true }),
  mod('openmpi/5.0.0rc1', { requires: ['gcc'] }),
  mod('zlib/1.3'),
  mod('hdf5/1.14.3', { requires: ['openmpi', 'zlib'] }),
  mod('petsc/3.20', { requires: ['openmpi'] }),
  mod('app/1.0', { requires: ['gcc/11.4'] }),
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
  mod('top/1', { requires: ['left', 'right'] }),
  mod('left/1', { requires: ['base'] }),
  mod('right/1', { requires: ['base'] }),
  mod('base/1'),
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

const resolve = suite('resolveSpec');

resolve('exact fullName', () => {
  assert.is(resolveSpec('gcc/11.4', AVAILABLE).fullName, 'gcc/11.4');
  assert.is(resolveSpec('openmpi/5.0.0rc1', AVAILABLE).fullName, 'openmpi/5.0.0rc1');
  assert.is(resolveSpec('tools/a/1.0', AVAILABLE).fullName, 'tools/a/1.0');
});

resolve('bare name: the marked default wins over the highest version', () => {
  assert.is(resolveSpec('python', AVAILABLE).fullName, 'python/3.9.6');
  assert.is(resolveSpec('openmpi', AVAILABLE).fullName, 'openmpi/4.1.6');
});

resolve('bare name without a marked default: highest by Lmod version order', () => {
  assert.is(resolveSpec('gcc', AVAILABLE).fullName, 'gcc/12.3');
  assert.is(resolveSpec('mpi', AVAILABLE).fullName, 'mpi/openmpi-10');
  assert.is(resolveSpec('cmake', AVAILABLE).fullName, 'cmake/3.28.0');
  const noMark = AVAILABLE.map((m) => (m.name === 'openmpi' ? { ...m, isDefault: false } : m));
  assert.is(resolveSpec('openmpi', noMark).fullName, 'openmpi/5.0.0rc1');
  assert.is(defaultOf('openmpi', noMark)!.fullName, 'openmpi/5.0.0rc1');
  assert.is(defaultOf('nosuch', AVAILABLE), undefined);
});

resolve('partial version: name/P picks among P.* and P-*, never P7', () => {
  assert.is(resolveSpec('gcc/12', AVAILABLE).fullName, 'gcc/12.3');
  assert.is(resolveSpec('openmpi/4.1', AVAILABLE).fullName, 'openmpi/4.1.6');
  assert.is(resolveSpec('cmake/3', AVAILABLE).fullName, 'cmake/3.28.0');
  assert.is(resolveSpec('python/3', AVAILABLE).fullName, 'python/3.9.6', 'marked default among the matches');
  assert.is(resolveSpec('mpi/openmpi', AVAILABLE).fullName, 'mpi/openmpi-10');
  throwsCode(() => resolveSpec('gcc/1', AVAILABLE), ERR.NOT_FOUND);
});

resolve('leading part of a multi-component name', () => {
  assert.is(resolveSpec('tools', AVAILABLE).fullName, 'tools/a/2.0');
  assert.is(resolveSpec('tools/a', AVAILABLE).fullName, 'tools/a/2.0');
  assert.is(resolveSpec('gcc/', AVAILABLE).fullName, 'gcc/12.3', 'a trailing slash is ignored, as Lmod does');
});

resolve('unknown module: Lmod wording', () => {
  const e = throwsCode(() => resolveSpec('nosuch/1.0', AVAILABLE), ERR.NOT_FOUND, 'The following module(s) are unknown: "nosuch/1.0"');
  assert.is(e.hint, 'Please check the spelling or version number. Also try "strata compose spider nosuch"');
  throwsCode(() => resolveSpec('', AVAILABLE), ERR.NOT_FOUND);
});

resolve('matchesSpec', () => {
  const m = resolveSpec('openmpi/4.1.6', AVAILABLE);
  for (const s of ['openmpi/4.1.6', 'openmpi', 'openmpi/4', 'openmpi/4.1']) assert.ok(matchesSpec(s, m), s);
  for (const s of ['openmpi/4.1.5', 'openmpi/4.10', 'openmp', 'mpi', 'openmpi/4.1.6.1']) assert.not.ok(matchesSpec(s, m), s);
  assert.ok(matchesSpec('tools', resolveSpec('tools/a/1.0', AVAILABLE)));
});

resolve('access: group members and root only', () => {
  const ansys = resolveSpec('ansys', AVAILABLE);
  assert.not.ok(mayLoad(ansys, ALICE));
  assert.ok(mayLoad(ansys, BOB));
  assert.ok(mayLoad(ansys, ROOT));
  assert.ok(mayLoad(resolveSpec('gcc', AVAILABLE), ALICE));
  const e = throwsCode(() => checkAccess(ansys, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
  assert.match(e.hint ?? '', 'ansys-users');
});

resolve.run();

// ---------------------------------------------------------------------------------------

const adding = suite('add');

adding('a bare name adds its default, silently', () => {
  const r = add(emptyStack(), ['gcc'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/12.3']);
  assert.equal(r.messages, []);
});

adding('adding a module already in the stack is a no-op', () => {
  const s = stackOf('zlib/1.3');
  const r = add(s, ['zlib/1.3'], AVAILABLE, ALICE);
  assert.equal(r.stack, s);
  assert.equal(r.messages, []);
  assert.equal(add(s, ['zlib'], AVAILABLE, ALICE).stack, s);
});

adding('one name at a time: a second version replaces the first and says so', () => {
  const r = add(stackOf('zlib/1.3', 'mpi/openmpi-2'), ['mpi/mpich-3'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['zlib/1.3', 'mpi/mpich-3']);
  assert.equal(r.messages, ['The following have been reloaded with a version change:\n  1) mpi/openmpi-2 => mpi/mpich-3']);
  const two = add(stackOf('gcc/11.4', 'python/3.9.6'), ['python/3.11.4', 'gcc/12.3'], AVAILABLE, ALICE);
  assert.equal(names(two.stack), ['python/3.11.4', 'gcc/12.3']);
  assert.equal(two.messages, [
    'The following have been reloaded with a version change:\n  1) gcc/11.4 => gcc/12.3\n  2) python/3.9.6 => python/3.11.4',
  ]);
});

adding('family: a module of the same family replaces the loaded one', () => {
  const r = add(stackOf('zlib/1.3', 'gcc/12.3'), ['intel'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['zlib/1.3', 'intel/2023.1']);
  assert.equal(r.messages, ['Lmod is automatically replacing "gcc/12.3" with "intel/2023.1".']);
});

adding('requires: missing requirements are added first, marked auto, and said', () => {
  const r = add(emptyStack(), ['hdf5'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'zlib/1.3*', 'hdf5/1.14.3']);
  assert.equal(r.messages, ['Loading hdf5/1.14.3\n  Loading requirement: gcc/12.3 openmpi/4.1.6 zlib/1.3']);
  assert.equal(r.stack.modules.map((e) => e.requiredBy ?? []), [['openmpi/4.1.6'], ['hdf5/1.14.3'], ['hdf5/1.14.3'], []]);
  assert.is(schemaViolation(STACK_SCHEMA, r.stack), undefined);
});

adding('requires: a loaded module of the required name satisfies a bare requirement', () => {
  const r = add(stackOf('gcc/11.4'), ['openmpi'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/11.4', 'openmpi/4.1.6']);
  assert.equal(r.messages, []);
  assert.equal(r.stack.modules[0]!.requiredBy, ['openmpi/4.1.6']);
});

adding('requires: an exact requirement changes the loaded version (Lmod depends_on)', () => {
  const r = add(stackOf('gcc/12.3'), ['app'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/11.4', 'app/1.0']);
  assert.equal(r.messages, ['The following have been reloaded with a version change:\n  1) gcc/12.3 => gcc/11.4']);
});

adding('asking for an auto entry makes it the user\'s', () => {
  const r = add(add(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack, ['zlib'], AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'zlib/1.3', 'hdf5/1.14.3']);
  const rm = remove(r.stack, ['hdf5'], AVAILABLE);
  assert.equal(names(rm.stack), ['zlib/1.3']);
});

adding('unknown specs: all named at once, stack unchanged', () => {
  const s = stackOf('zlib/1.3');
  const before = JSON.stringify(s);
  throwsCode(() => add(s, ['nosuch', 'gcc', 'other/2'], AVAILABLE, ALICE), ERR.NOT_FOUND, 'The following module(s) are unknown: "nosuch" "other/2"');
  throwsCode(
    () => add(s, ['broken'], AVAILABLE, ALICE),
    ERR.NOT_FOUND,
    'The following module(s) are unknown: "nonexistent" (required by broken/1)',
  );
  assert.is(JSON.stringify(s), before);
});

adding('conflicts refuse in both directions, stack unchanged', () => {
  const withRocm = stackOf('zlib/1.3', 'rocm/6.0');
  const before = JSON.stringify(withRocm);
  throwsCode(
    () => add(withRocm, ['cuda'], AVAILABLE, ALICE),
    ERR.CONFLICT,
    'Cannot load module "cuda/12.2" because these module(s) are loaded: rocm/6.0',
  );
  throwsCode(() => add(withRocm, ['gcc', 'cuda'], AVAILABLE, ALICE), ERR.CONFLICT);
  assert.is(JSON.stringify(withRocm), before);
  throwsCode(
    () => add(stackOf('cuda/12.2'), ['rocm'], AVAILABLE, ALICE),
    ERR.CONFLICT,
    'Cannot load module "rocm/6.0" because this module set a conflict: "cuda/12.2"',
  );
});

adding('restricted: refused for a non-member, allowed for a member and root', () => {
  throwsCode(() => add(emptyStack(), ['ansys'], AVAILABLE, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
  throwsCode(() => add(emptyStack(), ['fluent-wrapper'], AVAILABLE, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
  assert.equal(names(add(emptyStack(), ['ansys'], AVAILABLE, BOB).stack), ['ansys/2024.1']);
  assert.equal(names(add(emptyStack(), ['fluent-wrapper'], AVAILABLE, ROOT).stack), ['ansys/2024.1*', 'fluent-wrapper/1']);
});

adding('require cycles are refused', () => {
  throwsCode(
    () => add(emptyStack(), ['cyc-a'], AVAILABLE, ALICE),
    ERR.REQUIRE_CYCLE,
    'Module requirements form a cycle: cyc-a/1 -> cyc-b/1 -> cyc-a/1',
  );
});

adding('a requirement of the same family as its requester is refused (Lmod e_Family_Conflict)', () => {
  const avail = [...AVAILABLE, mod('gcc-wrapper/1', { family: 'compiler', requires: ['intel'] })];
  throwsCode(
    () => add(emptyStack(), ['gcc-wrapper'], avail, ALICE),
    ERR.CONFLICT,
    'You can only have one compiler module loaded at a time. You already have intel/2023.1 loaded.',
  );
});

adding.run();

// ---------------------------------------------------------------------------------------

const removing = suite('remove');

removing('requirements go with the module that pulled them in', () => {
  const s = add(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack;
  const r = remove(s, ['hdf5'], AVAILABLE);
  assert.equal(r.stack, emptyStack());
  assert.equal(r.messages, ['Unloading hdf5/1.14.3\n  Unloading useless requirement: gcc/12.3 openmpi/4.1.6 zlib/1.3']);
});

removing('a requirement another loaded module still needs is kept', () => {
  const s = add(emptyStack(), ['hdf5', 'petsc'], AVAILABLE, ALICE).stack;
  assert.equal(names(s), ['gcc/12.3*', 'openmpi/4.1.6*', 'zlib/1.3*', 'hdf5/1.14.3', 'petsc/3.20']);
  assert.equal(s.modules[1]!.requiredBy, ['hdf5/1.14.3', 'petsc/3.20']);
  const r = remove(s, ['hdf5'], AVAILABLE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'petsc/3.20']);
  assert.equal(r.stack.modules[1]!.requiredBy, ['petsc/3.20']);
  assert.equal(r.messages, ['Unloading hdf5/1.14.3\n  Unloading useless requirement: zlib/1.3']);
});

removing('a requirement the user asked for stays', () => {
  const s = add(emptyStack(), ['zlib', 'hdf5'], AVAILABLE, ALICE).stack;
  assert.equal(names(s), ['zlib/1.3', 'gcc/12.3*', 'openmpi/4.1.6*', 'hdf5/1.14.3']);
  const r = remove(s, ['hdf5'], AVAILABLE);
  assert.equal(names(r.stack), ['zlib/1.3']);
});

removing('a bare name removes the loaded version; a leading part removes every name under it', () => {
  assert.equal(names(remove(stackOf('gcc/11.4', 'zlib/1.3'), ['gcc'], AVAILABLE).stack), ['zlib/1.3']);
  assert.equal(names(remove(stackOf('gcc/11.4', 'zlib/1.3'), ['gcc/11'], AVAILABLE).stack), ['zlib/1.3']);
  const avail = [...AVAILABLE, mod('tools/b/1.0')];
  assert.equal(names(remove(stackOf('tools/a/1.0', 'zlib/1.3', 'tools/b/1.0'), ['tools'], avail).stack), ['zlib/1.3']);
});

removing('not loaded: Lmod note, nothing changes', () => {
  const s = stackOf('gcc/12.3');
  const r = remove(s, ['gcc/11.4', 'slepc'], AVAILABLE);
  assert.equal(r.stack, s);
  assert.equal(r.messages, [
    'Note: the module "gcc/11.4" cannot be unloaded because it was not loaded.',
    'Note: the module "slepc" cannot be unloaded because it was not loaded.',
  ]);
});

removing('removing a requirement itself is allowed, with Lmod\'s warning', () => {
  const s = add(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack;
  const r = remove(s, ['zlib'], AVAILABLE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'hdf5/1.14.3']);
  assert.equal(r.messages, ['The following dependent module(s) are not currently loaded: zlib (required by: hdf5/1.14.3)']);
});

removing.run();

// ---------------------------------------------------------------------------------------

const swapping = suite('swap and purge');

swapping('swap replaces A by B without a version-change report', () => {
  const r = swap(stackOf('mpi/openmpi-2', 'zlib/1.3'), 'mpi', 'mpi/mpich-3', AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['zlib/1.3', 'mpi/mpich-3']);
  assert.equal(r.messages, []);
});

swapping('requirements both need stay put; the others go', () => {
  const s = add(emptyStack(), ['openmpi/4.1.5'], AVAILABLE, ALICE).stack;
  const r = swap(s, 'openmpi/4.1.5', 'openmpi/4.1.6', AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['gcc/12.3*', 'openmpi/4.1.6']);
  assert.equal(r.messages, []);
  const h = add(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack;
  const r2 = swap(h, 'hdf5', 'petsc', AVAILABLE, ALICE);
  assert.equal(names(r2.stack), ['gcc/12.3*', 'openmpi/4.1.6*', 'petsc/3.20']);
  assert.equal(r2.messages, ['Unloading hdf5/1.14.3\n  Unloading useless requirement: zlib/1.3']);
});

swapping('swapping away a requirement warns about its dependants', () => {
  const s = add(emptyStack(), ['openmpi'], AVAILABLE, ALICE).stack;
  const r = swap(s, 'gcc', 'intel', AVAILABLE, ALICE);
  assert.equal(names(r.stack), ['openmpi/4.1.6', 'intel/2023.1']);
  assert.equal(r.messages, ['The following dependent module(s) are not currently loaded: gcc (required by: openmpi/4.1.6)']);
});

swapping('swap of a module not loaded fails with Lmod wording', () => {
  throwsCode(() => swap(stackOf('zlib/1.3'), 'cuda', 'rocm', AVAILABLE, ALICE), ERR.NOT_FOUND, 'Swap failed: "cuda" is not loaded.');
});

swapping('swap obeys conflicts and access, all or nothing', () => {
  const s = stackOf('cuda/12.2', 'zlib/1.3');
  throwsCode(() => swap(s, 'zlib', 'rocm', AVAILABLE, ALICE), ERR.CONFLICT);
  throwsCode(() => swap(s, 'zlib', 'ansys', AVAILABLE, ALICE), ERR.ACCESS_DENIED);
  assert.equal(names(s), ['cuda/12.2', 'zlib/1.3']);
  assert.equal(names(swap(s, 'cuda', 'rocm', AVAILABLE, ALICE).stack), ['zlib/1.3', 'rocm/6.0']);
});

swapping('purge empties the stack', () => {
  const r = purge(add(emptyStack(), ['hdf5'], AVAILABLE, ALICE).stack);
  assert.equal(r.stack, emptyStack());
  assert.equal(r.messages, []);
});

swapping.run();

// ---------------------------------------------------------------------------------------

const layering = suite('layerOrder');

layering('requirements below their dependants (diamond), otherwise stack order', () => {
  const s = stackOf('zlib/1.3', 'top/1', 'right/1', 'cmake/3.9', 'left/1', 'base/1');
  assert.equal(
    layerOrder(s, AVAILABLE).map((m) => m.fullName),
    ['zlib/1.3', 'base/1', 'left/1', 'right/1', 'top/1', 'cmake/3.9'],
  );
});

layering('add builds a stack already in layer order; result ignores catalogue order', () => {
  const s = add(emptyStack(), ['cmake', 'top'], AVAILABLE, ALICE).stack;
  assert.equal(names(s), ['cmake/3.28.0', 'base/1*', 'left/1*', 'right/1*', 'top/1']);
  const order = layerOrder(s, AVAILABLE).map((m) => m.fullName);
  assert.equal(order, ['cmake/3.28.0', 'base/1', 'left/1', 'right/1', 'top/1']);
  assert.equal(layerOrder(s, [...AVAILABLE].reverse()).map((m) => m.fullName), order);
});

layering('a version change appends the module; its dependants still come after it', () => {
  const s = add(add(emptyStack(), ['openmpi'], AVAILABLE, ALICE).stack, ['gcc/11.4'], AVAILABLE, ALICE).stack;
  assert.equal(names(s), ['openmpi/4.1.6', 'gcc/11.4']);
  assert.equal(layerOrder(s, AVAILABLE).map((m) => m.fullName), ['gcc/11.4', 'openmpi/4.1.6']);
});

layering('cycles and missing records are errors', () => {
  throwsCode(
    () => layerOrder(stackOf('cyc-a/1', 'cyc-b/1'), AVAILABLE),
    ERR.REQUIRE_CYCLE,
    'Module requirements form a cycle: cyc-a/1 -> cyc-b/1 -> cyc-a/1',
  );
  throwsCode(() => layerOrder(stackOf('gone/1'), AVAILABLE), ERR.NOT_FOUND, 'Module gone/1 is in the stack but not in the store');
});

layering.run();

// ---------------------------------------------------------------------------------------

const listing = suite('avail and spider');

listing('avail: Lmod layout with (D), (L), (R) and legend', () => {
  const avail = [mod('zlib/1.3'), mod('gcc/12.3'), mod('ansys/2024.1', { restricted: 'ansys-users' }), mod('gcc/11.4'), mod('ansys/2023.2', { restricted: 'ansys-users', isDefault: true })];
  const lines = formatAvail(avail, stackOf('gcc/12.3'), undefined, { width: 60 });
  assert.equal(lines, [
    '---------------------- strata store -----------------------',
    '   ansys/2023.2 (R,D)    gcc/11.4          zlib/1.3',
    '   ansys/2024.1 (R)      gcc/12.3 (L,D)',
    '',
    '  Where:',
    '   D:  Default Module',
    '   L:  Module is loaded',
    '   R:  Restricted to members of a group',
  ]);
  assert.equal(formatAvail(avail, emptyStack(), undefined, { width: 30 }).slice(1, 6), [
    '   ansys/2023.2 (R,D)',
    '   ansys/2024.1 (R)',
    '   gcc/11.4',
    '   gcc/12.3     (D)',
    '   zlib/1.3',
  ]);
});

listing('avail: pattern is a case-insensitive substring; no match is Lmod\'s message', () => {
  const lines = formatAvail(AVAILABLE, emptyStack(), 'GCC');
  assert.equal(lines.slice(1), ['   gcc/11.4    gcc/12.3 (D)', '', '  Where:', '   D:  Default Module']);
  assert.equal(formatAvail(AVAILABLE, emptyStack(), 'nothing-like-it'), ['No module(s) or extension(s) found!']);
  assert.equal(formatAvail(AVAILABLE, emptyStack(), 'zlib').slice(1), ['   zlib/1.3'], 'a lone version is not marked (D)');
});

listing('spider: names and their versions in version order', () => {
  assert.equal(spider(AVAILABLE, 'mpi'), [
    { name: 'mpi', versions: ['mpi/mpich-3', 'mpi/openmpi-2', 'mpi/openmpi-10'], default: 'mpi/openmpi-10' },
    { name: 'openmpi', versions: ['openmpi/4.1.5', 'openmpi/4.1.6', 'openmpi/5.0.0rc1'], default: 'openmpi/4.1.6' },
  ]);
  assert.equal(spider(AVAILABLE, 'GCC/11'), [
    { name: 'gcc', versions: ['gcc/11.4', 'gcc/12.3'], default: 'gcc/12.3', description: 'GNU compilers' },
  ]);
  assert.equal(spider(AVAILABLE, 'nothing-like-it'), []);
});

listing.run();

// ---------------------------------------------------------------------------------------

const collections = suite('collections and strata.json');

collections('save pins record CIDs; restore gives the same stack', () => {
  const s = add(emptyStack(), ['zlib', 'hdf5'], AVAILABLE, ALICE).stack;
  const c = saveCollection(s, AVAILABLE);
  assert.equal(c.modules, [
    { fullName: 'zlib/1.3', record: 'bagaaiera-zlib-1.3' },
    { fullName: 'gcc/12.3', record: 'bagaaiera-gcc-12.3', auto: true },
    { fullName: 'openmpi/4.1.6', record: 'bagaaiera-openmpi-4.1.6', auto: true },
    { fullName: 'hdf5/1.14.3', record: 'bagaaiera-hdf5-1.14.3' },
  ]);
  const collectionSchema = { $ref: '#/$defs/collection' };
  assert.is(schemaViolation(collectionSchema, JSON.parse(serializeCollection(c)), STACK_SCHEMA), undefined);
  assert.ok(schemaViolation(collectionSchema, { collectionVersion: 1, modules: [{ fullName: 'zlib/1.3' }] }, STACK_SCHEMA));
  assert.equal(parseCollection(serializeCollection(c), 'default'), c);
  throwsCode(() => parseCollection(JSON.stringify({ collectionVersion: 1, modules: [{ fullName: 'zlib/1.3' }] }), 'w'), STORE_ERR.RECORD_INVALID);
  throwsCode(() => parseCollection(JSON.stringify({ collectionVersion: 2, modules: [] }), 'default'), STORE_ERR.RECORD_INVALID);
  const r = restoreCollection(c, AVAILABLE, ALICE, 'mpi-work');
  assert.equal(r.stack, s);
  assert.equal(r.messages, ["Restoring modules from user's mpi-work"]);
});

collections('restore refuses when a pinned record changed or is gone', () => {
  const c = saveCollection(stackOf('zlib/1.3', 'gcc/12.3'), AVAILABLE);
  const reimported = AVAILABLE.map((m) => (m.fullName === 'gcc/12.3' ? { ...m, record: 'bagaaiera-gcc-12.3-rebuilt' } : m));
  const e = throwsCode(
    () => restoreCollection(c, reimported, ALICE),
    ERR.NOT_FOUND,
    'One or more modules in your default collection have changed: "gcc/12.3".',
  );
  assert.match(e.hint ?? '', 'strata compose save default');
  throwsCode(() => restoreCollection(c, AVAILABLE.filter((m) => m.name !== 'zlib'), ALICE), ERR.NOT_FOUND);
  throwsCode(() => saveCollection(stackOf('gone/1'), AVAILABLE), ERR.NOT_FOUND);
});

collections('restore checks access; an empty collection says so', () => {
  const c = saveCollection(stackOf('ansys/2024.1'), AVAILABLE);
  throwsCode(() => restoreCollection(c, AVAILABLE, ALICE), ERR.ACCESS_DENIED, 'Access to ansys/2024.1 is denied');
  assert.equal(names(restoreCollection(c, AVAILABLE, BOB).stack), ['ansys/2024.1']);
  const empty = restoreCollection({ collectionVersion: 1, modules: [] }, AVAILABLE, ALICE, 'blank');
  assert.equal(empty.stack, emptyStack());
  assert.equal(empty.messages[1], 'You have no modules loaded because the collection "blank" is empty!');
});

collections('strata.json round-trips and matches spec/stack.schema.json', () => {
  const s = add(emptyStack(), ['zlib', 'hdf5', 'petsc'], AVAILABLE, ALICE).stack;
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
    { stackVersion: 1, modules: [], more: true },
  ];
  for (const b of bad) {
    throwsCode(() => validateStack(b), ERR.STACK_INVALID);
    assert.ok(schemaViolation(STACK_SCHEMA, b), JSON.stringify(b));
  }
  // One name at a time is beyond the schema; the parser enforces it.
  throwsCode(
    () => validateStack({ stackVersion: 1, modules: [{ fullName: 'gcc/11.4' }, { fullName: 'gcc/12.3' }] }),
    ERR.STACK_INVALID,
    'strata.json is not a strata stack file: two versions of gcc are listed (one name at a time)',
  );
  throwsCode(() => parseStack('{"stackVersion": 1, "modules": ['), ERR.STACK_INVALID);
});

collections.run();

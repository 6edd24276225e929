/**
 * spec/layer-manifest.schema.json and spec/module-record.schema.json against real output:
 * every JSON blob an import writes (records and manifests of the small tree, with and without
 * every record option) validates, is canonical JSON (keys sorted, no whitespace) and is named
 * by its sha256. The schemas are strict (ajv strict mode; every object with declared
 * properties has additionalProperties: false), and broken documents fail validation.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { LocalStore } from '../store/local-store.js';
import { ensureGroup } from './helpers/users.js';
import { makeSmallTree, packGnu, SMALL_TREE } from './fixtures/small-tree.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { CLI, strataJson } from './helpers/cli.js';
import { readJsonBlob, sha256 } from './store-harness.js';

const SPEC = join(CLI, '..', '..', '..', 'spec');
const load = (name: string) => JSON.parse(readFileSync(join(SPEC, name), 'utf8'));

function compile(name: string) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  return ajv.compile(load(name));
}

/** Canonical JSON as DESIGN.md defines it, written independently of store/cid.ts. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Every object schema with declared properties must forbid others. Returns the offending JSON pointers. */
function looseObjects(schema: unknown, at = '#'): string[] {
  if (schema === null || typeof schema !== 'object') return [];
  const s = schema as Record<string, unknown>;
  const out: string[] = [];
  if (s.properties && s.additionalProperties !== false) out.push(at);
  if (s.type === 'object' && !s.properties && s.additionalProperties === undefined && !s.$ref) out.push(`${at} (no properties, no additionalProperties)`);
  for (const [k, v] of Object.entries(s)) {
    if (k === 'const' || k === 'enum' || k === 'examples') continue;
    if (typeof v === 'object') out.push(...looseObjects(v, `${at}/${k}`));
  }
  return out;
}

interface Ctx {
  dir: string;
  store: string;
}

const test = suite<Ctx>('spec schemas: real output validates, broken documents do not');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-schema-');
  ctx.store = join(ctx.dir, 'store');
});
test.after.each((ctx) => removeDir(ctx.dir));

test('the schemas are strict', () => {
  for (const name of ['module-record.schema.json', 'layer-manifest.schema.json']) {
    compile(name); // ajv strict mode: unknown keywords, ambiguous types and the like throw
    assert.equal(looseObjects(load(name)), [], `${name}: objects that allow unknown properties`);
    assert.is(load(name).$schema, 'https://json-schema.org/draft/2020-12/schema');
  }
});

test('records and manifests of real imports validate, are canonical and named by their digest', async ({ dir, store }) => {
  const tree = join(dir, 'tree');
  makeSmallTree(tree);
  // Unrestricted imports first: once a restricted module names the content, it stays restricted.
  const plain = strataJson(['store', 'import', 'tools', tree], { store });
  const s = await LocalStore.open(store);
  const labelled = await s.importModule('labelled/1', tree, { labels: { 'org.opencontainers.image.title': 'x' } });
  await s.close();
  ensureGroup('hpc'); // --restricted names a group the host has
  const full = strataJson([
    'store', 'import', 'mpi/openmpi-4', packGnu(tree, join(dir, 'g.tar')),
    '--requires', 'gcc/12', '--requires', 'ucx', '--allow-missing', '--conflicts', 'mpi/mpich-3', '--family', 'mpi',
    '--prepend', 'PATH=/opt/openmpi/bin', '--append', 'MANPATH=/opt/openmpi/man', '--setenv', 'OMPI_HOME=/opt/openmpi',
    '--description', 'Open MPI 4 — with ACLs', '--restricted', 'hpc', '--default',
  ], { store });
  const record = compile('module-record.schema.json');
  const manifest = compile('layer-manifest.schema.json');
  let records = 0;
  let manifests = 0;
  const blobs = join(store, 'blobs', 'sha256');
  for (const hex of readdirSync(blobs)) {
    const bytes = readFileSync(join(blobs, hex));
    assert.is(sha256(bytes), hex, 'blob named by its sha256');
    if (bytes[0] !== 0x7b) continue; // a layer tar
    const doc = JSON.parse(bytes.toString('utf8'));
    assert.is(bytes.toString('utf8'), canonical(doc), `${hex} is canonical JSON`);
    if ('recordVersion' in doc) {
      records++;
      assert.ok(record(doc), `record ${hex}: ${JSON.stringify(record.errors)}`);
    } else {
      manifests++;
      assert.ok(manifest(doc), `manifest ${hex}: ${JSON.stringify(manifest.errors)}`);
    }
  }
  assert.is(records, 3);
  assert.is(manifests, 1, 'one manifest: all three modules share the layer');

  const r = readJsonBlob(store, full.record);
  assert.equal(r.env, [
    { op: 'prepend', var: 'PATH', value: '/opt/openmpi/bin' },
    { op: 'append', var: 'MANPATH', value: '/opt/openmpi/man' },
    { op: 'set', var: 'OMPI_HOME', value: '/opt/openmpi' },
  ]);
  assert.equal([r.name, r.version, r.family, r.restricted, r.requires, r.conflicts], ['mpi', 'openmpi-4', 'mpi', 'hpc', ['gcc/12', 'ucx'], ['mpi/mpich-3']]);
  const p = readJsonBlob(store, plain.record);
  assert.equal([p.name, p.version, p.family, p.restricted, p.description], ['tools', '', null, null, '']);
  assert.equal(readJsonBlob(store, labelled.record).labels, { 'org.opencontainers.image.title': 'x' });
  const m = readJsonBlob(store, full.manifest);
  assert.is(m.layer, full.layer);
  assert.ok(m.entries[SMALL_TREE.capFile].xattrs['security.capability']);
});

const GOOD_RECORD = {
  recordVersion: 1,
  name: 'openmpi',
  version: '4.1.5',
  layer: 'bafkreidxndc7emhn2ddexxw6vf3bhd3k2xvruwb5mwooonuxt4ut627cje',
  manifest: 'bagaaiera2td5xitjdurx6jkmsq46tfmsfqq2usfwlr6txsftncrwmcb7weqq',
  requires: ['gcc/12'],
  conflicts: [],
  family: 'mpi',
  env: [{ op: 'prepend', var: 'PATH', value: '/opt/openmpi/bin' }],
  description: '',
  restricted: null,
};

const GOOD_MANIFEST = {
  manifestVersion: 1,
  layer: 'bafkreidxndc7emhn2ddexxw6vf3bhd3k2xvruwb5mwooonuxt4ut627cje',
  stats: { entries: 3, bytes: 10 },
  entries: {
    '.': { xattrs: { 'user.root': 'AA==' } },
    'acl-dir': { acl: { access: 'user::rwx,user:1001:r-x,group::rwx,mask::rwx,other::r-x', default: 'user::rwx,group::r-x,other::r-x' } },
    'bin/x': { xattrs: { 'security.capability': 'AQAAAgAgAAAAAAAAAAAAAAAAAAA=', 'user.empty': '' } },
  },
};

type Mutation = [string, (d: any) => void];

test('broken records fail validation', () => {
  const validate = compile('module-record.schema.json');
  assert.ok(validate(GOOD_RECORD), JSON.stringify(validate.errors));
  const bad: Mutation[] = [
    ['unknown top-level field', (d) => (d.extra = 1)],
    ['missing layer', (d) => delete d.layer],
    ['missing restricted', (d) => delete d.restricted],
    ['recordVersion 2', (d) => (d.recordVersion = 2)],
    ['layer given a json CID', (d) => (d.layer = d.manifest)],
    ['manifest given a raw CID', (d) => (d.manifest = d.layer)],
    ['sha256: digest instead of a CID', (d) => (d.layer = `sha256:${'0'.repeat(64)}`)],
    ['env op unset', (d) => (d.env[0].op = 'unset')],
    ['env var not a name', (d) => (d.env[0].var = '1PATH')],
    ['env entry with an extra field', (d) => (d.env[0].when = 'always')],
    ['requires with a space', (d) => (d.requires = ['gcc 12'])],
    ['family empty string', (d) => (d.family = '')],
    ['restricted a number', (d) => (d.restricted = 1000)],
    ['labels with a number', (d) => (d.labels = { a: 1 })],
    ['name with a trailing slash', (d) => (d.name = 'openmpi/')],
  ];
  for (const [what, mutate] of bad) {
    const d = structuredClone(GOOD_RECORD);
    mutate(d);
    assert.not.ok(validate(d), `record with ${what} must fail`);
  }
});

test('broken manifests fail validation', () => {
  const validate = compile('layer-manifest.schema.json');
  assert.ok(validate(GOOD_MANIFEST), JSON.stringify(validate.errors));
  const bad: Mutation[] = [
    ['unknown top-level field', (d) => (d.created = '2024-01-01')],
    ['missing stats', (d) => delete d.stats],
    ['negative bytes', (d) => (d.stats.bytes = -1)],
    ['stats with an extra field', (d) => (d.stats.files = 1)],
    ['a json CID as layer', (d) => (d.layer = 'bagaaiera2td5xitjdurx6jkmsq46tfmsfqq2usfwlr6txsftncrwmcb7weqq')],
    ['an entry with an extra field', (d) => (d.entries['bin/x'].mode = 493)],
    ['an empty entry', (d) => (d.entries['bin/y'] = {})],
    ['an xattr value not base64', (d) => (d.entries['bin/x'].xattrs['user.k'] = 'not base64!')],
    ['an xattr without a namespace', (d) => (d.entries['bin/x'].xattrs.plain = 'AA==')],
    ['an ACL as an xattr', (d) => (d.entries['bin/x'].xattrs['system.posix_acl_access'] = 'AgAAAA==')],
    ['an ACL with a user name', (d) => (d.entries['acl-dir'].acl.access = 'user::rwx,user:alice:r-x,group::rwx,mask::rwx,other::r-x')],
    ['an ACL in GNU newline form', (d) => (d.entries['acl-dir'].acl.access = 'user::rwx\nuser:1001:r-x\ngroup::rwx\nmask::rwx\nother::r-x')],
    ['an ACL with an extra field', (d) => (d.entries['acl-dir'].acl.mask = 'rwx')],
    ['an absolute path', (d) => (d.entries['/etc/passwd'] = { xattrs: { 'user.a': 'AA==' } })],
    ['a .. path', (d) => (d.entries['a/../b'] = { xattrs: { 'user.a': 'AA==' } })],
    ['a ./ path', (d) => (d.entries['./bin'] = { xattrs: { 'user.a': 'AA==' } })],
    ['a trailing slash', (d) => (d.entries['bin/'] = { xattrs: { 'user.a': 'AA==' } })],
    ['a doubled slash', (d) => (d.entries['bin//x'] = { xattrs: { 'user.a': 'AA==' } })],
  ];
  for (const [what, mutate] of bad) {
    const d = structuredClone(GOOD_MANIFEST);
    mutate(d);
    assert.not.ok(validate(d), `manifest with ${what} must fail`);
  }
});

test.run();

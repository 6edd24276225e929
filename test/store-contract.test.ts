/**
 * The StoreReader contract (store/index.ts), held against both implementations: the local
 * store on disk and the in-memory one (store/memory-store.ts). Records by name and by CID,
 * manifests, entry lists equal to what the layer holds in canonical order, bodies, an unknown
 * name, and a layer damaged late in its bytes failing at the end of the read, not cleanly.
 * Then compose builds the test stack's image from each: the same bytes.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildImage } from '../compose/squash.js';
import { comparePaths, MemoryStore, STORE_ERR, type LoadedModule, type StoreReader } from '../store/index.js';
import { LocalStore } from '../store/local-store.js';
import { EntryListBytes } from '../store/entry-rows.js';
import { encodeHeader, END_OF_ARCHIVE } from '../store/tar/writer.js';
import type { LayerEntry } from '../store/types.js';
import { seeded } from './helpers/random.js';
import { parseCid } from '../store/cid.js';
import { normalizeLayerPath } from '../store/layer/path.js';
import { makeStack } from './fixtures/stack.js';
import { removeDir, tempDir } from './helpers/tmp.js';

interface Ctx {
  dir: string;
  local: LocalStore;
  memory: MemoryStore;
  names: string[];
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function bodiesDigest(store: StoreReader, mod: LoadedModule): Promise<string> {
  const h = createHash('sha256');
  for await (const { entry, body } of store.readLayer(mod)) {
    h.update(`${entry.path}\0`);
    for await (const c of body) h.update(c);
  }
  return h.digest('hex');
}

async function errorOf(p: Promise<unknown>): Promise<{ code?: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string };
  }
  return {};
}

const test = suite<Ctx>('StoreReader contract: local and in-memory');
test.before(async (ctx) => {
  ctx.dir = tempDir('strata-contract-');
  const stack = makeStack(join(ctx.dir, 'stack'));
  ctx.local = await LocalStore.open(join(ctx.dir, 'store'));
  ctx.memory = new MemoryStore();
  ctx.names = [];
  for (const layer of stack.layers) {
    const name = `${layer.name}/1`;
    const r = await ctx.local.importModule(name, layer.tar, { allowMissing: true });
    ctx.names.push(name);
    for (const cid of [r.record, r.layer, r.manifest]) ctx.memory.put(await ctx.local.blobs.readBytes(parseCid(cid).hex));
    ctx.memory.names.set(name, r.record);
  }
});
test.after(async (ctx) => {
  await ctx.local.close();
  removeDir(ctx.dir);
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test('records, manifests, entry lists and bodies agree; the entry list is the layer in canonical order', async ({ local, memory, names }) => {
  for (const name of names) {
    const [a, b] = [await local.get(name), await memory.get(name)];
    assert.equal(b, a, `${name}: by name`);
    assert.equal(await memory.get(a.cid), { ...a, fullName: a.fullName }, `${name}: by CID`);
    assert.equal(await memory.manifestSummary(b), await local.manifestSummary(a), `${name}: manifest`);
    const entries = await collect(local.layerEntries(a));
    assert.equal(await collect(memory.layerEntries(b)), entries, `${name}: entry lists`);
    assert.equal(await collect(local.layerEntries(a)), entries, `${name}: the entry list read again (from the cache)`);
    // A miss rebuilds the cache file from the layer, byte for byte what the import wrote.
    const rowsFile = join(local.cacheDir, 'entries', `${parseCid(a.record.layer).hex}.rows`);
    const written = readFileSync(rowsFile);
    rmSync(rowsFile);
    assert.equal(await collect(local.layerEntries(a)), entries, `${name}: the entry list read from the layer`);
    assert.ok(readFileSync(rowsFile).equals(written), `${name}: the rebuilt entry list file is the import's`);
    const read: string[] = [];
    for await (const { entry } of local.readLayer(a)) read.push(entry.path);
    assert.equal(entries.map((e) => e.path), read, `${name}: the entry list is the layer's`);
    assert.equal([...read].sort(comparePaths), read, `${name}: canonical order`);
    assert.is(await bodiesDigest(memory, b), await bodiesDigest(local, a), `${name}: bodies`);
  }
  for (const s of [local, memory] as StoreReader[]) assert.is((await errorOf(s.get('nosuch/1'))).code, STORE_ERR.NOT_FOUND);
});

test('compose builds the same image bytes from either store', async ({ dir, local, memory, names }) => {
  const mods = [await local.get(names[0]!), await local.get(names[1]!)];
  const a = await buildImage(local, mods, join(dir, 'local.sqfs'), { cache: false });
  const b = await buildImage(memory, mods, join(dir, 'memory.sqfs'));
  assert.is(b.sha256, a.sha256);
  assert.is(sha(readFileSync(join(dir, 'memory.sqfs'))), a.sha256);
});

test('a layer damaged late fails at the end of the read in both, never cleanly', async ({ dir, local, memory, names }) => {
  const mod = await local.get(names[0]!);
  const hex = parseCid(mod.record.layer).hex;
  const file = join(dir, 'store', 'blobs', 'sha256', hex);
  const good = readFileSync(file);
  const bad = Buffer.from(good);
  bad[bad.length - 1100] ^= 0x01; // inside the last file's body or padding, not a header
  writeFileSync(file, bad);
  memory.blobs.set(hex, bad);
  try {
    for (const s of [local, memory] as StoreReader[]) {
      let items = 0;
      const e = await errorOf((async () => {
        for await (const { body } of s.readLayer(mod)) {
          items++;
          for await (const _ of body) void _;
        }
      })());
      assert.is(e.code, STORE_ERR.DIGEST_MISMATCH, 'the end of the read throws');
      assert.ok(items > 0, 'entries came first: the check is at the end');
    }
  } finally {
    writeFileSync(file, good);
    memory.blobs.set(hex, good);
  }
});

test('an entry list read back across a MiB boundary inside a character gives the same entries', async ({ dir, local }) => {
  // Names of three-byte characters, enough of them for a list past a MiB (the cache is read
  // a MiB at a time), under a directory whose name's length puts the first MiB's end inside one.
  const names: string[] = [];
  for (let i = 0; i < 9000; i++) names.push(`dd/${'€'.repeat(40)}-${String(i).padStart(5, '0')}`);
  const tar = join(dir, 'euro.tar');
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: 0 };
  writeFileSync(tar, Buffer.concat([encodeHeader({ path: 'dd/', type: 'dir', ...meta, mode: 0o755 }), ...names.map((path) => encodeHeader({ path, type: 'file', ...meta })), END_OF_ARCHIVE]));
  const r = await local.importModule('euro/1', tar, { allowMissing: true });
  const rows = readFileSync(join(local.cacheDir, 'entries', `${parseCid(r.layer).hex}.rows`));
  assert.ok(rows.length > 1 << 20 && (rows[1 << 20]! & 0xc0) === 0x80, 'the first MiB of the list ends inside a character');
  const mod = await local.get('euro/1');
  const listed = (await collect(local.layerEntries(mod))).map((e) => e.path);
  assert.equal(listed, ['dd', ...names], 'the entries, every name whole');
});

test.run();

const rows = suite('entry list rows');

rows('an entry list is the rows as JSON.stringify writes them, whatever the strings hold, in chunks of any size', () => {
  const pieces = ['a', 'dir/f', '"', '\\', '\n', '\u0001', '\u001f', '\u007f', 'é', '\u2028', '\ud83d\ude00', '\ud800', '\udfff', ' ', '/'];
  const rnd = seeded(11);
  const text = () => Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => pieces[Math.floor(rnd() * pieces.length)]).join('');
  const entries: LayerEntry[] = [];
  const expected: string[] = [];
  for (let i = 0; i < 5000; i++) {
    const mtime = i % 5 === 0 ? -i : i % 5 === 1 ? i + 0.5 : i % 5 === 2 ? 2 ** 53 + 2 * i : 1700000000 + i;
    const e: LayerEntry = { path: i % 1000 === 7 ? text().repeat(400) : text(), type: 'file', mode: i & 0o7777, uid: i * 7, gid: 65534, mtime, size: i * 4099 };
    const row: unknown[] = [e.path, e.type, e.mode, e.uid, e.gid, e.mtime, e.size];
    if (i % 4 === 1) {
      e.type = 'symlink';
      e.linkname = text();
    } else if (i % 4 === 2) {
      e.type = 'char';
      e.devmajor = i % 300;
      if (i % 8 === 2) e.devminor = i % 7;
    }
    row[1] = e.type;
    if (e.linkname !== undefined || e.devmajor !== undefined) row.push(e.linkname ?? '');
    if (e.devmajor !== undefined) row.push(e.devmajor, e.devminor ?? 0);
    entries.push(e);
    expected.push(JSON.stringify(row));
  }
  const text0 = `[${expected.map((r, i) => `${i === 0 ? '' : ','}\n${r}`).join('')}\n]\n`;
  for (const chunk of [1 << 20, 4096, 300]) {
    const parts: Buffer[] = [];
    const list = new EntryListBytes((b) => parts.push(Buffer.from(b)), chunk);
    for (const e of entries) list.add(e);
    list.end();
    const got = Buffer.concat(parts).toString('utf8');
    assert.ok(got === text0, `chunk ${chunk}: first difference at ${[...got].findIndex((c, i) => c !== text0[i])}`);
    if (chunk < 1 << 20) assert.ok(parts.length > 1, 'handed on in several chunks');
  }
  const empty: Buffer[] = [];
  const none = new EntryListBytes((b) => empty.push(Buffer.from(b)));
  none.end();
  assert.is(Buffer.concat(empty).toString(), '[\n]\n', 'no entries');
});

rows.run();

const paths = suite('canonical layer paths');

paths('normalizeLayerPath gives what splitting every component gives, and refuses the same paths', () => {
  /** The rule spelled out: drop empty and '.' components, refuse '..', NUL and a leading '/'. */
  const reference = (raw: string): string => {
    if (raw.includes('\0')) throw new Error('NUL');
    if (raw.startsWith('/')) throw new Error('absolute');
    const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw new Error('dotdot');
    return parts.length === 0 ? '.' : parts.join('/');
  };
  const outcome = (f: () => string): string => {
    try {
      return `= ${f()}`;
    } catch {
      return 'refused';
    }
  };
  const pieces = ['', '.', '..', '...', 'a', 'bc', '.x', '..y', 'z.', 'é', '\0', ' '];
  const rnd = seeded(5);
  const samples = ['', '.', './', '/', './/', './a', './a/', 'a/', 'a//', './a//', './/a', './../a', './.', 'a/..', './a/b/'];
  for (let i = 0; i < 20000; i++) {
    const n = 1 + Math.floor(rnd() * 5);
    samples.push(Array.from({ length: n }, () => pieces[Math.floor(rnd() * pieces.length)]).join('/'));
  }
  for (const raw of samples) {
    assert.is(outcome(() => normalizeLayerPath(raw)), outcome(() => reference(raw)), JSON.stringify(raw));
  }
});

paths.run();

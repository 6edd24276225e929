/**
 * strata.lock and the hash list. Schema: spec/lock.schema.json.
 *
 *   { "lockfileVersion": 1,
 *     "modules": [ { "fullName", "record", "layer", "manifest" } … ]   in layer order, lowest first
 *     "env": [ { "op", "var", "value" } … ] }                         the modules' env, in that order
 *
 * The lock's identity is CIDv1(json) of its canonical JSON; the file on disk is the same
 * document pretty-printed. The hash list is the plain-text form: one record CID a line (a layer
 * CID is accepted when it names exactly one record in the store); `#` starts a comment.
 */
import * as fsp from 'node:fs/promises';
import { canonicalJson, envOpProblem, isCid, parseCid, RAW_CODEC, STORE_ERR, type EnvOp, type LoadedModule, type Store } from '../store/index.js';
import { StrataError, COMPOSE_ERR } from './errors.js';

export interface LockModule {
  fullName: string;
  record: string;
  layer: string;
  manifest: string;
}

export interface Lock {
  lockfileVersion: 1;
  modules: LockModule[];
  env: EnvOp[];
}

export function lockOf(mods: LoadedModule[]): Lock {
  return {
    lockfileVersion: 1,
    modules: mods.map((m) => ({ fullName: m.fullName, record: m.cid, layer: m.record.layer, manifest: m.record.manifest })),
    env: mods.flatMap((m) => m.record.env),
  };
}

export function lockText(lock: Lock): string {
  return `${JSON.stringify(JSON.parse(canonicalJson(lock).toString('utf8')), null, 2)}\n`;
}

export function hashListText(lock: Lock): string {
  return `# strata hash list: module record CIDs, lowest layer first\n${lock.modules.map((m) => `${m.record}  # ${m.fullName}`).join('\n')}\n`;
}

/**
 * What `strata rebuild FILE` was given: a JSON lock (its text starts with `{`), else a hash
 * list. Throws ERR_NOT_FOUND when FILE cannot be read.
 */
export async function buildSourceOf(file: string): Promise<{ lock?: string; cids?: string }> {
  let head: string;
  try {
    const fh = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      head = buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await fh.close();
    }
  } catch {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${file} does not exist`, { hint: 'give a lock (strata compose lock -o FILE) or a hash list (--cids)' });
  }
  return head.trimStart().startsWith('{') ? { lock: file } : { cids: file };
}

export async function readLockFile(file: string): Promise<Lock> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `lock file ${file} does not exist`, { hint: 'run `strata compose lock` first' });
  }
  return parseLock(text, file);
}

/** Parses and checks lock text; `where` names it in errors (a file, or an image's /.strata/lock.json). */
export function parseLock(text: string, where: string, code: string = COMPOSE_ERR.LOCK_INVALID): Lock {
  let v: Lock;
  try {
    v = JSON.parse(text) as Lock;
  } catch {
    throw new StrataError(code, `${where} is not JSON`, code === COMPOSE_ERR.LOCK_INVALID ? { hint: 'give a strata.lock, or a hash list with --cids' } : {});
  }
  if (v?.lockfileVersion !== 1 || !Array.isArray(v.modules) || !Array.isArray(v.env ?? [])) {
    throw new StrataError(code, `${where} is not a strata lock (lockfileVersion 1)`);
  }
  for (const m of v.modules) {
    if (typeof m?.fullName !== 'string' || !isCid(m.record) || !isCid(m.layer) || !isCid(m.manifest)) {
      throw new StrataError(code, `${where}: a module entry lacks fullName, record, layer or manifest`);
    }
  }
  v.env ??= [];
  for (const e of v.env) {
    const why = envOpProblem(e);
    if (why) throw new StrataError(code, `${where}: ${why}`);
  }
  return v;
}

/** Makes sure a record and its layer and manifest blobs are in the store (from a remote). */
export type FetchMissing = (recordCid: string, fullName?: string) => Promise<void>;

/**
 * Loads the lock's records from the store and checks they say what the lock says. With
 * `fetch`, each module's missing blobs are fetched first (a no-op when all are present).
 */
export async function modulesOfLock(store: Store, lock: Lock, fetch?: FetchMissing): Promise<LoadedModule[]> {
  const out: LoadedModule[] = [];
  for (const m of lock.modules) {
    if (fetch) await fetch(m.record, m.fullName);
    const mod = await store.get(m.record).catch((e: unknown) => {
      if (e instanceof StrataError && (e.code === STORE_ERR.BLOB_MISSING || e.code === STORE_ERR.NOT_FOUND)) {
        throw new StrataError(COMPOSE_ERR.NOT_FOUND, `module ${m.fullName} (record ${m.record}) is not in this store`, {
          hint: 'import or pull it, or configure a remote with `strata store remote add`',
        });
      }
      throw e;
    });
    if (mod.record.layer !== m.layer || mod.record.manifest !== m.manifest) {
      throw new StrataError(COMPOSE_ERR.LOCK_INVALID, `record ${m.record} of ${m.fullName} does not name the layer and manifest the lock names`);
    }
    out.push({ ...mod, fullName: m.fullName });
  }
  return out;
}

/**
 * Reads a hash list: record CIDs, or layer CIDs that name exactly one record in the index.
 * With `fetch`, a record CID's missing blobs are fetched first.
 */
export async function modulesOfHashList(store: Store, file: string, fetch?: FetchMissing): Promise<LoadedModule[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `hash list ${file} does not exist`);
  }
  if (text.includes('\0')) {
    throw new StrataError(COMPOSE_ERR.LOCK_INVALID, `${file} is not a hash list (it holds binary data)`, { hint: 'a hash list has one record CID a line (strata compose lock --cids)' });
  }
  const cids = text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '');
  if (cids.length === 0) throw new StrataError(COMPOSE_ERR.LOCK_INVALID, `hash list ${file} names no CIDs`);
  let byLayer: Map<string, string[]> | undefined;
  const out: LoadedModule[] = [];
  for (const cid of cids) {
    if (!isCid(cid)) {
      throw new StrataError(COMPOSE_ERR.LOCK_INVALID, `${file}: ${JSON.stringify(cid.length > 40 ? `${cid.slice(0, 37)}...` : cid)} is not a CID`, {
        hint: 'a hash list has one record CID a line (strata compose lock --cids)',
      });
    }
    if (parseCid(cid).codec !== RAW_CODEC) {
      if (fetch) await fetch(cid);
      out.push(await store.get(cid));
      continue;
    }
    byLayer ??= await recordsByLayer(store);
    const recs = byLayer.get(cid) ?? [];
    if (recs.length !== 1) {
      throw new StrataError(COMPOSE_ERR.NOT_FOUND, `layer ${cid} names ${recs.length === 0 ? 'no module' : `${recs.length} modules`} in this store`, {
        hint: 'list record CIDs instead (strata compose lock --cids)',
      });
    }
    out.push(await store.get(recs[0]!));
  }
  return out;
}

async function recordsByLayer(store: Store): Promise<Map<string, string[]>> {
  const map = new Map<string, string[]>();
  for (const m of await store.list()) {
    if (m.damaged) continue;
    const r = await store.loadRecord(m.record, m.fullName);
    const list = map.get(r.layer) ?? [];
    if (!list.includes(m.record)) list.push(m.record);
    map.set(r.layer, list);
  }
  return map;
}

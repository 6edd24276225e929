/**
 * The composer's working state and its operations for the CLI: strata.json and strata.lock in
 * the working directory, the available modules as the resolver sees them, who the user is,
 * and saved collections (in the store's index, pinned to record CIDs).
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { StrataError, COMPOSE_ERR } from './errors.js';
import type { TransferHooks, LoadedModule, Store } from '../store/index.js';
import { Lock, lockOf, lockText, modulesOfHashList, modulesOfLock, readLockFile } from './lock.js';
import { checkAccess, ModuleInfo, User } from './resolve.js';
import { checkRequirementsMet, Collection, emptyStack, layerOrder, parseStack, serializeStack, StackFile } from './stack.js';

export const STACK_FILE = 'strata.json';
export const LOCK_FILE = 'strata.lock';

export async function availableModules(store: Store): Promise<ModuleInfo[]> {
  const out: ModuleInfo[] = [];
  for (const m of await store.list()) {
    if (m.damaged) continue; // unusable until repaired; `strata store verify` names it
    const r = await store.loadRecord(m.record, m.fullName);
    out.push({
      key: m.fullName,
      fullName: r.version === '' ? r.name : `${r.name}/${r.version}`,
      name: r.name,
      version: r.version,
      record: m.record,
      requires: r.requires,
      conflicts: r.conflicts,
      family: r.family,
      restricted: m.restricted,
      isDefault: m.isDefault,
      description: r.description,
      ...(r.parents ? { parents: r.parents } : {}),
      ...(r.hidden ? { hidden: true } : {}),
      ...(r.sticky ? { sticky: true } : {}),
      ...(r.whatis ? { whatis: r.whatis } : {}),
      ...(r.keywords ? { keywords: r.keywords } : {}),
      ...(r.prereq ? { prereq: r.prereq } : {}),
      ...(r.loadAny ? { loadAny: r.loadAny } : {}),
    });
  }
  return out;
}

/**
 * The calling user as the kernel sees it: its uid and the gids of its credentials (effective
 * gid and supplementary groups, getgroups(2)), never a program found on PATH. Restricted
 * modules name a group; `mayLoad` turns that name into a gid through NSS in this process.
 */
export function currentUser(): User {
  const uid = process.geteuid?.() ?? -1;
  let name = String(uid);
  try {
    name = os.userInfo().username;
  } catch {
    /* no passwd entry (a batch-system or container uid): named by its number */
  }
  const gids = new Set<number>(process.getgroups?.() ?? []);
  gids.add(process.getegid?.() ?? -1);
  return { name, uid, groups: [...gids].map(String) };
}

export async function readStack(dir: string): Promise<StackFile> {
  try {
    return parseStack(await fsp.readFile(path.join(dir, STACK_FILE), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyStack();
    throw e;
  }
}

/** Writes strata.json and the strata.lock it resolves to (atomically, each). */
export async function writeStack(store: Store, dir: string, stack: StackFile): Promise<Lock> {
  const mods = await stackModules(store, stack);
  const lock = lockOf(mods);
  await writeAtomic(path.join(dir, STACK_FILE), serializeStack(stack));
  await writeAtomic(path.join(dir, LOCK_FILE), lockText(lock));
  return lock;
}

/** The stack's modules in layer order (requirements below their users). */
export async function stackModules(store: Store, stack: StackFile): Promise<LoadedModule[]> {
  const available = await availableModules(store);
  const order = layerOrder(stack, available);
  return Promise.all(order.map(async (m) => ({ fullName: m.key ?? m.fullName, cid: m.record, record: await store.loadRecord(m.record, m.fullName) })));
}

/**
 * What an output is built from: `--lock FILE`, `--cids FILE`, else the working stack (whose
 * lock is written as a side effect). Access rules apply to every module whatever the source.
 * Blobs a lock or hash list names but the store lacks are fetched from the configured remotes
 * (store/remote.ts), reporting through `transfer`; none configured: "not in this store".
 */
export async function outputModules(
  store: Store,
  dir: string,
  from: { lock?: string; cids?: string },
  transfer?: TransferHooks,
): Promise<LoadedModule[]> {
  let mods: LoadedModule[];
  const fetch = from.lock || from.cids ? await store.fetcher(transfer) : undefined;
  if (from.lock) mods = await modulesOfLock(store, await readLockFile(from.lock), fetch);
  else if (from.cids) mods = await modulesOfHashList(store, from.cids, fetch);
  else {
    const stack = await readStack(dir);
    if (stack.modules.length === 0) {
      throw new StrataError(COMPOSE_ERR.STACK_EMPTY, 'the stack is empty', { hint: 'add modules with `strata compose add M`, or give --lock FILE or --cids FILE' });
    }
    checkRequirementsMet(stack, await availableModules(store));
    mods = await stackModules(store, stack);
    await writeStack(store, dir, stack);
  }
  const user = currentUser();
  for (const m of mods) checkAccess({ fullName: m.fullName, restricted: (await store.moduleRestriction?.(m.record)) ?? m.record.restricted }, user);
  // From here the build reads these blobs; holding them open keeps a concurrent rm + gc from
  // taking them away mid-build (gc's grace period covers the time until now).
  await store.hold(mods);

  return mods;
}

/** Collection `name`, or Lmod's "does not exist" error. */
export async function loadCollection(store: Store, name: string): Promise<Collection> {
  const c = await store.loadCollection(name);
  if (c === undefined) {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `Lmod has detected the following error: User module collection: "${name}" does not exist.`, { hint: 'Try "strata compose savelist" for possible choices.' });
  }
  return c;
}

/**
 * Writes `file` whole or not at all: a temp file beside it created with O_EXCL (a name planted
 * there is never followed or reused), then rename(2). A directory that cannot be written is one
 * line naming it and what to do, not the temp file's errno.
 */
export async function writeAtomic(file: string, text: string | Buffer): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.strata-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    await fsp.writeFile(tmp, text, { flag: 'wx', mode: 0o644 });
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOENT') {
      throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `cannot write ${path.basename(file)} in ${path.dirname(file)}: ${code === 'ENOENT' ? 'no such directory' : 'not writable'}`, {
        hint: 'work in a directory of yours, or keep the stack files elsewhere with --stack DIR or STRATA_STACK',
      });
    }
    throw e;
  }
}

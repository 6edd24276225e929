/**
 * Outputs of a stack: the sandbox directory (here) and the SquashFS image (squash.ts), both
 * with the same embedded metadata, and `inspect` of either.
 */
import * as fsp from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { lookupGroup } from '../native/ids.js';
import { StrataError, COMPOSE_ERR } from './errors.js';
import { printable } from '../native/errors.js';
import { IMAGE_ERR } from './image/errors.js';
import { readEntriesDocument, type LoadedModule, type Store, type StoreReader } from '../store/index.js';
import { AclIndex, AclIndexEntry, EmbeddedFiles } from './embedded.js';
import { Lock, lockOf, parseLock } from './lock.js';
import { MergePlan, planMerge } from './merge.js';
import { SandboxResult, writeSandbox } from './sandbox.js';
import { isPrivateName } from './tree/index.js';

/** The licence an output carries: the one group its restricted modules belong to. */
export interface OutputLicence {
  group: string;
  gid: number;
  /** The restricted modules, for messages. */
  modules: string[];
}

/**
 * `mods` with each record's `restricted` as its content is held here: a module imported open
 * whose layer a restricted module named later is restricted too (restriction follows content,
 * spec/store.md), so its outputs get the licence rule. A store that keeps no marks changes none.
 */
export async function withContentRestrictions(store: StoreReader, mods: LoadedModule[]): Promise<LoadedModule[]> {
  const out: LoadedModule[] = [];
  for (const m of mods) {
    const restricted = (await store.moduleRestriction?.(m.record)) ?? m.record.restricted;
    out.push(restricted === m.record.restricted ? m : { ...m, record: { ...m.record, restricted } });
  }
  return out;
}

/**
 * Outputs of licensed stacks stay licensed: an image file or sandbox root holding restricted
 * modules is created for the licence group only (no access for others). Modules of two
 * licence groups cannot share one output (each group's files would be open to the other's
 * members through the output's own mode), so that is refused. Undefined: nothing restricted.
 */
export function outputLicence(mods: readonly LoadedModule[]): OutputLicence | undefined {
  const byGroup = new Map<string, string[]>();
  for (const m of mods) {
    const g = m.record.restricted;
    if (g !== null) byGroup.set(g, [...(byGroup.get(g) ?? []), m.fullName]);
  }
  if (byGroup.size === 0) return undefined;
  if (byGroup.size > 1) {
    const list = [...byGroup].map(([g, ms]) => `${ms.join(', ')} (${g})`).join(' and ');
    throw new StrataError(COMPOSE_ERR.LICENCE_CONFLICT, `modules of ${byGroup.size} licence groups cannot share one output: ${list}`, {
      hint: 'build one output per licence group, each with the modules it needs',
    });
  }
  const [group, modules] = [...byGroup][0]!;
  const gid = lookupGroup(group);
  if (gid === undefined) {
    throw new StrataError(COMPOSE_ERR.ACCESS_DENIED, `licence group ${group} of ${modules.join(', ')} does not exist on this host`, {
      hint: 'the output could not be kept from other users; ask your site staff to create the group',
    });
  }
  return { group, gid, modules };
}

/**
 * Plans the merge of `mods` with the embedded metadata laid on top: the plan, and the
 * embedded files' bytes; the caller disposes of both. `fingerprints` as planMerge's.
 */
export async function planOutput(store: StoreReader, mods: LoadedModule[], opts: { fingerprints?: number } = {}): Promise<{ plan: MergePlan; embedded: EmbeddedFiles; lock: Lock }> {
  const lock = lockOf(mods);
  const tmp = await store.scratchDir();
  let embedded: EmbeddedFiles | undefined;
  try {
    const plan = await planMerge(store, mods, (acls, hasDir) => {
      embedded = new EmbeddedFiles(lock, acls, tmp);
      return embedded.entries(hasDir);
    }, opts);
    return { plan, embedded: embedded!, lock };
  } catch (e) {
    embedded?.dispose();
    throw e;
  }
}

export async function buildSandbox(
  store: Store,
  mods: LoadedModule[],
  dir: string,
  opts: { force?: boolean; onProgress?(done: number, total: number): void } = {},
): Promise<SandboxResult> {
  mods = await withContentRestrictions(store, mods);
  const licence = outputLicence(mods);
  const { plan, embedded } = await planOutput(store, mods);
  try {
    return await writeSandbox(store, mods, plan, embedded, dir, { ...opts, keep: [store.root], licenceGid: licence?.gid });
  } finally {
    plan.dispose();
    embedded.dispose();
  }
}

export interface InspectInfo {
  kind: 'sandbox' | 'squashfs image' | 'erofs image';
  lock: Lock;
  env: string;
  /** `entries` only when asked for (--json): the counts hold nothing per path. */
  acls: { paths: number; withDefault: number; entries?: AclIndex['entries'] };
}

/** Where describe() reads a target's embedded files: whole (small ones), or as they stream (the ACL index). */
interface EmbeddedReader {
  read(rel: string): Promise<Buffer | undefined>;
  stream(rel: string): Promise<AsyncIterable<Uint8Array> | undefined>;
}

/**
 * The lock, environment and ACL summary a sandbox or image embeds. The ACL index is read as
 * it streams (a licensed tree of a million paths has a 125 MB one); its entries are kept
 * only with `entries`.
 */
export async function inspectTarget(target: string, opts: { entries?: boolean } = {}): Promise<InspectInfo> {
  let st;
  try {
    st = await fsp.stat(target);
  } catch {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${target} does not exist`);
  }
  if (st.isDirectory()) {
    const names = await fsp.readdir(target).catch(() => [] as string[]);
    if (names.some(isPrivateName)) {
      throw new StrataError(COMPOSE_ERR.INCOMPLETE, `${printable(target)} is an incomplete sandbox: a build into it was interrupted or is still running`, {
        hint: 'build it again with --force',
      });
    }
    return describe(target, 'sandbox', { read: (p) => readRegular(target, p), stream: (p) => streamRegular(target, p) }, opts);
  }
  const { openImage } = await import('./image/index.js');
  const img = await openImage(target);
  try {
    const reader: EmbeddedReader = {
      read: async (p) => ((await img.stat(p)) ? img.readFile(p) : undefined),
      stream: async (p) => {
        const e = await img.stat(p);
        if (e && e.type !== 'file') throw new StrataError(IMAGE_ERR.CORRUPT, `${target}: /${p} is not a regular file`, { hint: 'it was not written by strata' });
        return e ? img.openFile(e) : undefined;
      },
    };
    return await describe(target, img.format === 'erofs' ? 'erofs image' : 'squashfs image', reader, opts);
  } finally {
    await img.close();
  }
}

/**
 * A file of a sandbox as untrusted input: opened without following a symlink and without
 * blocking (a FIFO planted as lock.json must not hang inspect), taken only when it is a regular
 * file; undefined when absent. Anything else is one line.
 */
async function openRegular(root: string, rel: string): Promise<{ fh: fsp.FileHandle; size: number } | undefined> {
  const file = path.join(root, rel);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new StrataError(IMAGE_ERR.CORRUPT, `${printable(root)}: /${rel} cannot be read (${code === 'ELOOP' ? 'a symlink' : code})`, { hint: 'it was not written by strata' });
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new StrataError(IMAGE_ERR.CORRUPT, `${printable(root)}: /${rel} is not a regular file`, { hint: 'it was not written by strata' });
  }
  return { fh, size: st.size };
}

/** A small file of a sandbox, whole (see openRegular; at most 64 MiB). */
async function readRegular(root: string, rel: string): Promise<Buffer | undefined> {
  const f = await openRegular(root, rel);
  if (!f) return undefined;
  try {
    if (f.size > 64 << 20) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${printable(root)}: /${rel} is not a regular file of a sane size`, { hint: 'it was not written by strata' });
    }
    return await f.fh.readFile();
  } finally {
    await f.fh.close();
  }
}

/** A file of a sandbox as it streams (see openRegular). */
async function streamRegular(root: string, rel: string): Promise<AsyncIterable<Uint8Array> | undefined> {
  const f = await openRegular(root, rel);
  if (!f) return undefined;
  return (async function* () {
    try {
      const b = Buffer.allocUnsafe(1 << 20);
      for (;;) {
        const { bytesRead } = await f.fh.read(b, 0, b.length, null);
        if (bytesRead === 0) return;
        yield b.subarray(0, bytesRead);
      }
    } finally {
      await f.fh.close();
    }
  })();
}

async function describe(target: string, kind: InspectInfo['kind'], from: EmbeddedReader, opts: { entries?: boolean }): Promise<InspectInfo> {
  const lockBytes = await from.read('.strata/lock.json');
  if (!lockBytes) throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${target} has no /.strata/lock.json`, { hint: 'it was not built by strata' });
  const lock = parseLock(lockBytes.toString('utf8'), `${target}: /.strata/lock.json`, IMAGE_ERR.CORRUPT);
  const acls: InspectInfo['acls'] = { paths: 0, withDefault: 0, ...(opts.entries ? { entries: {} } : {}) };
  const chunks = await from.stream('.strata/acl.json');
  if (chunks) {
    const notIndex = (why: string) => new StrataError(IMAGE_ERR.CORRUPT, `${target}: /.strata/acl.json is not a strata ACL index (${why})`);
    const { hasEntries } = await readEntriesDocument(chunks, 'entries', notIndex, (p, e) => {
      acls.paths++;
      if ((e as AclIndexEntry).default) acls.withDefault++;
      if (acls.entries) acls.entries[p] = e as AclIndexEntry;
    });
    if (!hasEntries) throw notIndex('no "entries"');
  }
  const env = (await from.read('.strata/env.sh'))?.toString('utf8') ?? '';
  return { kind, lock, env, acls };
}

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
import type { LoadedModule, Store, StoreReader } from '../store/index.js';
import { AclIndex, EmbeddedFiles } from './embedded.js';
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

/** Plans the merge of `mods` with the embedded metadata laid on top. */
/** The plan, and the embedded files' bytes; the caller disposes of both. */
export async function planOutput(store: StoreReader, mods: LoadedModule[]): Promise<{ plan: MergePlan; embedded: EmbeddedFiles; lock: Lock }> {
  const lock = lockOf(mods);
  const tmp = await store.scratchDir();
  let embedded: EmbeddedFiles | undefined;
  try {
    const plan = await planMerge(store, mods, (acls, hasDir) => {
      embedded = new EmbeddedFiles(lock, acls, tmp);
      return embedded.entries(hasDir);
    });
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
  acls: { paths: number; withDefault: number; entries: AclIndex['entries'] };
}

export async function inspectTarget(target: string): Promise<InspectInfo> {
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
    return describe(target, 'sandbox', async (p) => readRegular(target, p));
  }
  const { openImage } = await import('./image/index.js');
  const img = await openImage(target);
  try {
    return await describe(target, img.format === 'erofs' ? 'erofs image' : 'squashfs image', async (p) => ((await img.stat(p)) ? img.readFile(p) : undefined));
  } finally {
    await img.close();
  }
}

/**
 * A file of a sandbox as untrusted input: opened without following a symlink and without
 * blocking (a FIFO planted as lock.json must not hang inspect), read only when it is a regular
 * file of sane size; undefined when absent. Anything else is one line.
 */
async function readRegular(root: string, rel: string): Promise<Buffer | undefined> {
  const file = path.join(root, rel);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new StrataError(IMAGE_ERR.CORRUPT, `${printable(root)}: /${rel} cannot be read (${code === 'ELOOP' ? 'a symlink' : code})`, { hint: 'it was not written by strata' });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > 64 << 20) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${printable(root)}: /${rel} is not a regular file of a sane size`, { hint: 'it was not written by strata' });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

async function describe(target: string, kind: InspectInfo['kind'], read: (p: string) => Promise<Buffer | undefined>): Promise<InspectInfo> {
  const lockBytes = await read('.strata/lock.json');
  if (!lockBytes) throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${target} has no /.strata/lock.json`, { hint: 'it was not built by strata' });
  const lock = parseLock(lockBytes.toString('utf8'), `${target}: /.strata/lock.json`, IMAGE_ERR.CORRUPT);
  let acl: AclIndex | undefined;
  try {
    acl = JSON.parse((await read('.strata/acl.json'))?.toString('utf8') ?? '{"aclVersion":1,"entries":{}}') as AclIndex;
  } catch {
    acl = undefined;
  }
  if (!acl || typeof acl !== 'object' || typeof acl.entries !== 'object' || acl.entries === null || Array.isArray(acl.entries)) {
    throw new StrataError(IMAGE_ERR.CORRUPT, `${target}: /.strata/acl.json is not a strata ACL index`);
  }
  const env = (await read('.strata/env.sh'))?.toString('utf8') ?? '';
  const entries = acl.entries;
  return {
    kind,
    lock,
    env,
    acls: { paths: Object.keys(entries).length, withDefault: Object.values(entries).filter((e) => e.default).length, entries },
  };
}

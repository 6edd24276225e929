/**
 * What every output carries besides the merged layers:
 *
 *   /.strata/lock.json                  the lock the output was built from
 *   /.strata/acl.json                   every POSIX ACL of the tree, with the path's original mode
 *   /.strata/env.sh                     the modules' environment, for `source`
 *   /.singularity.d/env/90-strata.sh    the same, where Apptainer sources it at start
 *
 * All are root-owned, mtime 0, so they never break byte-identity.
 */
import type { Lock } from './lock.js';
import { lockText } from './lock.js';
import type { EntryAcl, LayerEntry, EnvOp } from '../store/index.js';

export interface AclIndexEntry extends EntryAcl {
  /** The path's permission bits as the layers give them (an image may narrow them). */
  mode: number;
  /** The path's owning group as the layers give it (an image may switch it to a group its ACL names). */
  gid?: number;
}

/** /.strata/acl.json: `{ aclVersion: 1, entries: { "<path>": { mode, gid, access?, default? } } }` */
export interface AclIndex {
  aclVersion: 1;
  entries: Record<string, AclIndexEntry>;
}

export const EMBEDDED_DIRS = ['.singularity.d', '.singularity.d/env', '.strata'];

export function embeddedFiles(lock: Lock, acls: AclIndex): Array<{ path: string; content: Buffer }> {
  const env = Buffer.from(envScript(lock.env));
  return [
    { path: '.singularity.d/env/90-strata.sh', content: env },
    { path: '.strata/acl.json', content: Buffer.from(`${JSON.stringify(acls, null, 1)}\n`) },
    { path: '.strata/env.sh', content: env },
    { path: '.strata/lock.json', content: Buffer.from(lockText(lock)) },
  ];
}

export function embeddedEntries(files: Array<{ path: string; content: Buffer }>, existingDirs: (p: string) => boolean): LayerEntry[] {
  const meta = { uid: 0, gid: 0, mtime: 0 };
  const dirs: LayerEntry[] = EMBEDDED_DIRS.filter((d) => !existingDirs(d)).map((d) => ({ path: d, type: 'dir', mode: 0o755, size: 0, ...meta }));
  return [...dirs, ...files.map((f): LayerEntry => ({ path: f.path, type: 'file', mode: 0o644, size: f.content.length, ...meta }))];
}

/** POSIX sh; values single-quoted so nothing in them is expanded. */
export function envScript(env: EnvOp[]): string {
  const q = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
  const lines = ['# Environment of this strata stack (generated from its lock; do not edit).'];
  for (const e of env) {
    if (e.op === 'set') lines.push(`export ${e.var}=${q(e.value)}`);
    else if (e.op === 'prepend') lines.push(`export ${e.var}=${q(e.value)}"\${${e.var}:+:\$${e.var}}"`);
    else lines.push(`export ${e.var}="\${${e.var}:+\$${e.var}:}"${q(e.value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The shared model of a layer entry. Every source (tar dialects, directories, overlay
 * upperdirs, OCI layouts) is reduced to this; canonical tars, sidecar manifests, the merge,
 * the sandbox writer and the SquashFS writer all consume it.
 */

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

import type { EntryAcl } from '../native/acl.js';
import type { ModuleRecord } from './record.js';

/** POSIX ACLs in canonical text (native/acl.ts: numeric ids, comma separated). */
export type { EntryAcl };

export interface LayerEntry {
  /**
   * Canonical path: relative, '/'-separated, no leading './' or '/', no trailing '/', no
   * empty, '.' or '..' component. The layer root itself is '.'.
   */
  path: string;
  type: EntryType;
  /** Permission bits only, setuid/setgid/sticky included (mask 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds since the epoch. */
  mtime: number;
  /** Content length of a regular file; 0 for every other type. */
  size: number;
  /** Symlink target as stored, or for a hard link the canonical path of its first member. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes other than system.posix_acl_* (those live in `acl`), by name. */
  xattrs?: Map<string, Buffer>;
  acl?: EntryAcl;
}

/** OCI whiteout conventions, kept as entries in canonical layers. */
export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

/** Byte order of canonical paths: component by component, so parents sort before children. */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '.') return -1;
  if (b === '.') return 1;
  const pa = a.split('/');
  const pb = b.split('/');
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    if (pa[i] !== pb[i]) return Buffer.compare(Buffer.from(pa[i]!), Buffer.from(pb[i]!));
  }
  return pa.length - pb.length;
}

/** A module with the sizes and counts `store show` prints. */
export interface ModuleDescription {
  fullName: string;
  cid: string;
  record: ModuleRecord;
  layerBytes: number;
  manifest: { stats: { entries: number; bytes: number }; aclPaths: number; xattrPaths: number };
}

export interface VerifyReport {
  modules: number;
  problems: Array<{ module: string; what: string; blob: string; status: string }>;
  /** Restricted modules whose content this user may not read (present only when there are some). */
  skipped?: string[];
}

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

/**
 * Byte order of canonical paths: component by component (the UTF-8 bytes of each), so parents
 * sort before children. Compared a UTF-16 unit at a time without splitting or encoding: a '/'
 * ends a component and sorts before every other character, and units are mapped to UTF-8 byte
 * order (a surrogate, part of a code point above U+FFFF, after every other unit).
 */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '.') return -1;
  if (b === '.') return 1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 47) return -1;
    if (y === 47) return 1;
    return utf8Rank(x) - utf8Rank(y);
  }
  return a.length - b.length;
}

/** Two names (no '/') in the UTF-8 byte order of their encodings, as Buffer.compare would give. */
export function compareNames(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return utf8Rank(x) - utf8Rank(y);
  }
  return a.length - b.length;
}

/** A UTF-16 unit's place in UTF-8 byte order: surrogates (U+10000 and up) after U+E000–U+FFFF. */
function utf8Rank(u: number): number {
  return u < 0xd800 ? u : u < 0xe000 ? u + 0x2000 : u - 0x800;
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

/**
 * The one place where paths coming from archives and directories become canonical layer paths.
 * Every archive path goes through normalizeLayerPath; no other code judges path safety.
 */
import { printable } from '../../native/errors.js';
import { StrataError, STORE_ERR } from '../errors.js';
export { printable };
import { WHITEOUT_PREFIX, OPAQUE_WHITEOUT } from '../types.js';

/**
 * Matches every path that is not a canonical layer path other than `.`: absolute, holding a
 * NUL, or with an empty, `.` or `..` component (which a trailing or doubled `/` makes).
 */
export const NOT_CANONICAL = /^\/|\0|(?:^|\/)\.{0,2}(?:\/|$)/;

/**
 * `./a//b/` → `a/b`; `.`, `./`, `` → `.` (the layer root). Refuses absolute paths, `..`
 * components and NUL bytes: a layer path can only name something inside the layer.
 */
export function normalizeLayerPath(raw: string, what = 'entry'): string {
  // Most paths are canonical already (every path of a store layer is): one test, no split.
  if (!NOT_CANONICAL.test(raw)) return raw;
  // Most others are canonical but for GNU tar's './' before them and a directory's '/' after.
  const start = raw.startsWith('./') ? 2 : 0;
  const end = raw.length > start + 1 && raw.endsWith('/') ? raw.length - 1 : raw.length;
  if (end - start < raw.length) {
    const p = raw.slice(start, end);
    if (p.length > 0 && !NOT_CANONICAL.test(p)) return p;
  }
  if (raw.includes('\0')) throw unsafe(raw, what, 'contains a NUL byte');
  if (raw.startsWith('/')) throw unsafe(raw, what, 'is an absolute path');
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(raw, what, "has a '..' component");
    parts.push(part);
  }
  return parts.length === 0 ? '.' : parts.join('/');
}

export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

export function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** True when `p` lies below the directory path `dir` ('.' holds everything). */
export function isBelow(p: string, dir: string): boolean {
  return dir === '.' ? p !== '.' : p.length > dir.length && p.startsWith(dir) && p.charCodeAt(dir.length) === 47;
}

/** Strict ancestors, nearest last: `a/b/c` → ['a', 'a/b']. */
export function ancestors(p: string): string[] {
  const out: string[] = [];
  for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) out.push(p.slice(0, i));
  return out;
}

/** For a whiteout path, what it hides: `{ opaque: dir }` or `{ hides: path }`; undefined if not a whiteout. */
export function whiteoutTarget(p: string): { opaque: string } | { hides: string } | undefined {
  if (!p.includes(WHITEOUT_PREFIX)) return undefined; // no name in it can start with the prefix
  const name = baseName(p);
  if (!name.startsWith(WHITEOUT_PREFIX)) return undefined;
  const dir = parentOf(p);
  if (name === OPAQUE_WHITEOUT) return { opaque: dir };
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === '' || hidden === '.' || hidden === '..' || hidden.includes('/')) {
    throw unsafe(p, 'whiteout', `names '${hidden}', which is not an entry of its directory`);
  }
  return { hides: dir === '.' ? hidden : `${dir}/${hidden}` };
}

/** What a merge reads of a layer before the rest: its whiteouts and hard links. */
export function whiteoutOrLink(e: { path: string; type: string }): boolean {
  return e.type === 'hardlink' || baseName(e.path).startsWith(WHITEOUT_PREFIX);
}

function unsafe(raw: string, what: string, why: string): StrataError {
  return new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `${what} '${printable(raw)}' ${why}`, {
    hint: 'refusing a layer that could write outside its root',
  });
}


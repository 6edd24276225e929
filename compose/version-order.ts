/**
 * Module names and Lmod's version order.
 *
 * Names. A fullName is '/'-separated; its last component is the version and everything
 * before it is the name (Lmod's N/V rule): `openmpi/4.1.5` → openmpi + 4.1.5,
 * `mpi/openmpi-2` → mpi + openmpi-2, `a/b/c` → a/b + c. A single component is a name
 * without a version (version '').
 *
 * Version order. Lmod compares versions through `parseVersion` (src/parseVersion.lua),
 * which turns a version into a canonical key compared byte by byte. strata computes the
 * same key, so the two tools agree on "highest". The rules, in effect:
 *  - numeric runs compare as numbers (each is zero-padded to 9 digits): 1.10 > 1.9,
 *    openmpi-10 > openmpi-2; a run of 9 or more digits is kept as written;
 *  - dots separate parts and trailing zero parts do not count: 2.4 == 2.4.0, 3.2-0 == 3.2;
 *  - letters compare as lower-case words; a word that sorts before "final" marks a
 *    pre-release: 2.0a1 < 2.0b1 < 2.0rc1 < 2.0 ("rc", "pre" and "preview" count as "c";
 *    "dev" sorts before everything: 2.0dev1 < 2.0a1);
 *  - "-", "-p" and "p" mark a patch level: 2.4 < 2.4-1 == 2.4p1 == 2.4-p1 < 2.4.1;
 *    a "-" right before a pre-release word is dropped (1.0-rc1 == 1.0rc1);
 *  - anything else is compared as its single character.
 * Input is taken as UTF-8 bytes and only ASCII letters are lowered, as Lua does in the
 * C locale.
 */

export interface SplitName {
  name: string;
  /** '' when the fullName has a single component. */
  version: string;
}

/** Splits a fullName at its last '/': the last component is the version. */
export function splitFullName(fullName: string): SplitName {
  const i = fullName.lastIndexOf('/');
  if (i < 0) return { name: fullName, version: '' };
  return { name: fullName.slice(0, i), version: fullName.slice(i + 1) };
}

/** Inverse of splitFullName. */
export function joinFullName(name: string, version: string): string {
  return version === '' ? name : `${name}/${version}`;
}

const ZERO = '000000000';
const FINAL = '*zfinal';
const PATCH = '*zfinal-';
const REPLACE: Record<string, string> = {
  pre: 'c',
  preview: 'c',
  rc: 'c',
  dev: '@',
  p: 'zfinal-',
  '-': 'zfinal-',
};

function isDigit(c: string): boolean {
  return c >= '0' && c <= '9';
}
function isAlpha(c: string): boolean {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/** The raw parts of a version, before trailing zeros and patch markers are trimmed. */
function versionParts(version: string): string[] {
  // One char per byte, ASCII lower-cased only.
  const s = Buffer.from(version, 'utf8')
    .toString('latin1')
    .replace(/[A-Z]/g, (c) => c.toLowerCase());
  const parts: string[] = [];
  let i = 0;
  for (;;) {
    if (i < s.length && s[i] === '.') {
      if (i === 0) {
        i++;
        parts.push(ZERO);
        continue;
      }
      i++;
    }
    if (i > s.length) break;
    if (i === s.length) {
      parts.push(FINAL);
      break;
    }
    let j = i;
    if (isDigit(s[i]!)) {
      while (j < s.length && isDigit(s[j]!)) j++;
      const run = s.slice(i, j);
      parts.push(run.length < 9 ? String(Number(run)).padStart(9, '0') : run);
    } else if (s[i] === '/') {
      j = i + 1;
      parts.push('/');
    } else if (isAlpha(s[i]!)) {
      while (j < s.length && isAlpha(s[j]!)) j++;
      const word = s.slice(i, j);
      parts.push('*' + (REPLACE[word] ?? word));
    } else if (s[i] === '-' && s[i + 1] === 'p') {
      j = i + 2;
      parts.push(PATCH);
    } else {
      j = i + 1;
      parts.push('*' + (REPLACE[s[i]!] ?? s[i]!));
    }
    i = j;
  }
  return parts;
}

/**
 * Lmod's canonical version key: two versions compare as their keys compare byte by byte.
 * Exposed for callers that sort many versions (compute each key once).
 */
export function parseVersion(version: string): string {
  const out: string[] = [];
  const popWhile = (v: string): void => {
    while (out.length > 0 && out[out.length - 1] === v) out.pop();
  };
  for (const part of versionParts(version)) {
    if (part.startsWith('*')) {
      if (part !== FINAL) popWhile(PATCH);
      popWhile(ZERO);
      if (part === FINAL) popWhile(PATCH);
    }
    out.push(part);
  }
  return out.join('.').split('./.').join('/');
}

function compareKeys(a: string, b: string): number {
  // Keys hold only chars < 0x100, so UTF-16 unit order is byte order.
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Lmod's version order: negative when a is older than b, positive when newer, 0 when Lmod
 * treats them as the same version (2.4 and 2.4.0). Use `compareVersionsStrict` to sort.
 */
export function compareVersions(a: string, b: string): number {
  return compareKeys(parseVersion(a), parseVersion(b));
}

/** Version order with a deterministic tie-break on the raw strings (byte order). */
export function compareVersionsStrict(a: string, b: string): number {
  return compareVersions(a, b) || Buffer.compare(Buffer.from(a), Buffer.from(b));
}

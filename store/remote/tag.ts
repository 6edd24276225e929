/**
 * OCI tags for module fullNames.
 *
 * A tag matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. A fullName (`name/version`, see DESIGN.md)
 * is mapped to a tag one character at a time:
 *
 *   '/'                     → '_'                 (the separator, e.g. mpi/openmpi-2 → mpi_openmpi-2)
 *   [A-Za-z0-9]             → itself
 *   '.' '-'                 → itself, except as the very first character (a tag cannot start so)
 *   anything else, '_' too  → '__' + two lowercase hex digits per UTF-8 byte ('_' → '__5f',
 *                             '+' → '__2b', 'é' → '__c3__a9')
 *
 * Why this is injective: a fullName has no empty component, so two '/' are never adjacent, and
 * an escape is always '__' followed by two hex digits (never '_'). A run of underscores in a
 * tag is therefore 1 ('/'), 2 (an escape) or 3 ('/' then an escape) long, and decoding is
 * unambiguous; fullNameFromTag() is the inverse.
 *
 * When the encoding is longer than 128 characters, the tag is its first whole units up to 93
 * characters, then '__h', then the first 32 hex digits of sha256(fullName) — 128 bits, so a
 * collision needs a sha256 collision. '__h' never occurs in an unhashed tag ('h' is not a hex
 * digit), so hashed and unhashed tags cannot collide either. Hashed tags cannot be decoded;
 * the module record keeps the tag it was pushed under.
 */
import { createHash } from 'node:crypto';
import { StrataError, STORE_ERR } from '../errors.js';

const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const MAX_TAG = 128;
const HASH_MARK = '__h';
const HASH_HEX = 32;

/** True when `tag` is a valid OCI tag. */
export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

function escapeChar(ch: string): string {
  return [...Buffer.from(ch, 'utf8')].map((b) => `__${b.toString(16).padStart(2, '0')}`).join('');
}

/**
 * The tag a module is pushed under. Deterministic and injective over valid fullNames (see the
 * file comment). Throws ERR_INVALID_ARGUMENT for an empty fullName or one with an empty component.
 */
export function tagFromFullName(fullName: string): string {
  if (fullName === '' || fullName.split('/').some((c) => c === '')) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a module name: ${JSON.stringify(fullName)}`, {
      hint: 'a module name is name/version with no empty component',
    });
  }
  const units: string[] = [];
  let first = true;
  for (const ch of fullName) {
    if (ch === '/') units.push('_');
    else if (/^[A-Za-z0-9]$/.test(ch)) units.push(ch);
    else if ((ch === '.' || ch === '-') && !first) units.push(ch);
    else units.push(escapeChar(ch));
    first = false;
  }
  const full = units.join('');
  if (full.length <= MAX_TAG) return full;
  const budget = MAX_TAG - HASH_MARK.length - HASH_HEX;
  let prefix = '';
  for (const u of units) {
    if (prefix.length + u.length > budget) break;
    prefix += u;
  }
  const hash = createHash('sha256').update(fullName, 'utf8').digest('hex').slice(0, HASH_HEX);
  return `${prefix}${HASH_MARK}${hash}`;
}

/**
 * The fullName a tag was made from, or undefined when the tag is not the output of
 * tagFromFullName() or is a hashed (over-long) one.
 */
export function fullNameFromTag(tag: string): string | undefined {
  if (!isValidTag(tag) || tag.includes(HASH_MARK)) return undefined;
  const bytes: number[] = [];
  const pushText = (s: string) => bytes.push(...Buffer.from(s, 'utf8'));
  let i = 0;
  while (i < tag.length) {
    let run = 0;
    while (tag[i + run] === '_') run++;
    if (run === 0) {
      pushText(tag[i]!);
      i++;
      continue;
    }
    if (run === 1 || run === 3) pushText('/');
    if (run === 1) { i += 1; continue; }
    if (run !== 2 && run !== 3) return undefined;
    const hex = tag.slice(i + run, i + run + 2);
    if (!/^[0-9a-f]{2}$/.test(hex)) return undefined;
    bytes.push(parseInt(hex, 16));
    i += run + 2;
  }
  const text = Buffer.from(bytes).toString('utf8');
  // Only accept canonical encodings, so that decode(tag) is defined exactly on the image.
  try {
    return tagFromFullName(text) === tag ? text : undefined;
  } catch {
    return undefined;
  }
}

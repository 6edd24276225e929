/**
 * Streaming reads of the JSON documents strata keeps per-path entries in, whatever their number:
 * a layer's manifest (layer/manifest.ts) and an image's /.strata/acl.json (compose/unsquash.ts).
 */

import { stringsCodec, type RecordCodec } from './spill.js';

/** An entry on its way through spill files: its path, and the entry's JSON text. */
export type EntryRec = [path: string, json: string];

/** A path holds no NUL, and JSON text none unescaped: NUL separates the two. */
export const entryRecCodec: RecordCodec<EntryRec> = stringsCodec<EntryRec>();

/** The largest single value a document may hold (a manifest entry with every xattr a file can carry is far below). */
const MAX_VALUE = 16 << 20;

/**
 * Reads a JSON document whose member `member` is an object of objects (a layer manifest's
 * "entries", an image's /.strata/acl.json's) as its bytes stream, holding one entry at a time:
 * `onEntry` gets each of them in the document's order, with its JSON text (the entry parsed
 * and checked to be an object); the other members come back parsed once the document has
 * ended, and whether `member` was there. A million entries parsed as one document were a
 * gigabyte of heap. Any JSON layout is read. Malformed input: `bad(why)`, thrown.
 */
export async function readEntriesDocument(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  member: string,
  bad: (why: string) => Error,
  onEntry: (key: string, entry: object, json: string) => void,
): Promise<{ head: Record<string, unknown>; hasEntries: boolean }> {
  const it: AsyncIterator<Uint8Array> | Iterator<Uint8Array> = Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let text = '';
  let at = 0;
  let ended = false;
  const more = async (): Promise<void> => {
    if (ended) throw bad('it ends before the document does');
    const r = await it.next();
    let piece: string;
    try {
      piece = r.done ? utf8.decode() : utf8.decode(r.value, { stream: true });
    } catch {
      throw bad('it is not UTF-8');
    }
    if (r.done) ended = true;
    text = text.slice(at) + piece;
    at = 0;
  };
  const ws = (i: number): number => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
      i++;
    }
  };
  /** The end of the string starting at i, or -1 when the text ends first. */
  const stringEnd = (i: number): number => {
    for (let j = i + 1; j < text.length; j++) {
      const c = text.charCodeAt(j);
      if (c === 0x5c) j++;
      else if (c === 0x22) return j + 1;
    }
    return -1;
  };
  /** The end of the value starting at i (its extent only: JSON.parse judges it), or -1. */
  const valueEnd = (i: number): number => {
    const c = text[i];
    if (c === '"') return stringEnd(i);
    if (c === '{' || c === '[') {
      let depth = 0;
      for (let j = i; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x22) {
          const e = stringEnd(j);
          if (e < 0) return -1;
          j = e - 1;
        } else if (d === 0x7b || d === 0x5b) depth++;
        else if (d === 0x7d || d === 0x5d) {
          if (--depth === 0) return j + 1;
        }
        if (j - i > MAX_VALUE) throw bad(`a value is larger than ${MAX_VALUE} bytes`);
      }
      return -1;
    }
    let j = i;
    while (j < text.length && !',}] \t\r\n'.includes(text[j]!)) j++;
    return j < text.length || ended ? j : -1;
  };
  /** The next token after white space, as scanned by `end` (-1: needs more text). */
  const next = async (end: (i: number) => number): Promise<string> => {
    for (;;) {
      const i = ws(at);
      if (i < text.length) {
        const e = end(i);
        if (e >= 0) {
          at = e;
          return text.slice(i, e);
        }
        if (text.length - i > MAX_VALUE) throw bad(`a value is larger than ${MAX_VALUE} bytes`);
      }
      await more();
    }
  };
  const char = (i: number) => i + 1;
  /** The next character after white space, not taken. */
  const peek = async (): Promise<string> => {
    for (;;) {
      const i = ws(at);
      if (i < text.length) {
        at = i;
        return text[i]!;
      }
      await more();
    }
  };
  const parse = (json: string): unknown => {
    try {
      return JSON.parse(json);
    } catch {
      throw bad(`malformed JSON near ${JSON.stringify(json.slice(0, 40))}`);
    }
  };
  const key = async (): Promise<string> => {
    const k = await next(stringEnd);
    if (k[0] !== '"') throw bad(`a key is expected, not ${JSON.stringify(k.slice(0, 20))}`);
    const s = parse(k) as string;
    if ((await next(char)) !== ':') throw bad(`':' is expected after ${k}`);
    return s;
  };
  /** Members of the object whose '{' was just read, until its '}'. */
  const members = async (member: (k: string) => Promise<void>): Promise<void> => {
    if ((await peek()) === '}') {
      at++;
      return;
    }
    for (;;) {
      await member(await key());
      const sep = await next(char);
      if (sep === '}') return;
      if (sep !== ',') throw bad(`',' or '}' is expected, not ${JSON.stringify(sep)}`);
    }
  };

  if ((await next(char)) !== '{') throw bad('it is not a JSON object');
  const head: Record<string, unknown> = {};
  let hasEntries = false;
  await members(async (k) => {
    if (k === member && !hasEntries) {
      hasEntries = true;
      if ((await next(char)) !== '{') throw bad(`"${member}" is not an object`);
      await members(async (key) => {
        const json = await next(valueEnd);
        const entry = parse(json);
        if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad(`the entry of ${JSON.stringify(key)} is not an object`);
        onEntry(key, entry, json);
      });
      return;
    }
    if (k === member || k in head) throw bad(`it has "${k}" twice`);
    head[k] = parse(await next(valueEnd));
  });
  for (;;) {
    if (ws(at) < text.length) throw bad('it goes on after the document');
    if (ended) break;
    await more();
  }
  return { head, hasEntries };
}

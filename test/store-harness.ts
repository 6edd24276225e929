/**
 * Shared by the store acceptance suites (test/store-*.test.ts), which drive the real CLI through
 * helpers/cli.ts: readers of the store directory with plain fs calls and multiformats,
 * independent of store/.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CID } from 'multiformats/cid';
import * as assert from 'uvu/assert';

/** `blobs/sha256/*` as "name size" lines, sorted. */
export function blobListing(store: string): string[] {
  const dir = join(store, 'blobs', 'sha256');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .map((n) => `${n} ${statSync(join(dir, n)).size}`);
}

/** Every file below `dir` (relative paths, sorted), for "nothing new was written" checks. */
export function fileListing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel === '' ? dir : join(dir, rel);
    for (const n of readdirSync(abs).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      out.push(r);
      if (statSync(join(abs, n), { throwIfNoEntry: false })?.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

/** The hex sha256 a CIDv1 (sha2-256) names, parsed with multiformats, not with store/cid.ts. */
export function cidHex(cid: string): string {
  const c = CID.parse(cid);
  assert.is(c.version, 1, `${cid} is CIDv1`);
  assert.is(c.multihash.code, 0x12, `${cid} uses sha2-256`);
  return Buffer.from(c.multihash.digest).toString('hex');
}

export function cidCodec(cid: string): number {
  return CID.parse(cid).code;
}

export function blobPath(store: string, cid: string): string {
  return join(store, 'blobs', 'sha256', cidHex(cid));
}

/** Reads a JSON blob by CID, checking the file's sha256 is the CID's digest. */
export function readJsonBlob<T = any>(store: string, cid: string): T {
  const bytes = readFileSync(blobPath(store, cid));
  assert.is(createHash('sha256').update(bytes).digest('hex'), cidHex(cid), `blob of ${cid} matches its digest`);
  return JSON.parse(bytes.toString('utf8')) as T;
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export { seeded } from './helpers/random.js';

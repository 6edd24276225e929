/**
 * Identities. A layer is CIDv1(raw, sha2-256) of its canonical tar, so its digest is the OCI
 * `sha256:` digest of the same bytes. Manifests, records and locks are CIDv1(json, sha2-256) of
 * canonical JSON. Blobs are stored by the hex digest alone: one blob, one file, whatever codec
 * a CID names it with.
 */
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import { createHash } from 'node:crypto';
import { StrataError, STORE_ERR } from './errors.js';

export const RAW_CODEC = 0x55;
export const JSON_CODEC = 0x0200;
const SHA2_256 = 0x12;

export type Codec = typeof RAW_CODEC | typeof JSON_CODEC;

export function cidFromHex(codec: Codec, hex: string): string {
  return CID.createV1(codec, Digest.create(SHA2_256, Buffer.from(hex, 'hex'))).toString();
}

/** Parses a CID string (or `sha256:<hex>`) into its codec and hex digest. */
export function parseCid(text: string): { codec: number; hex: string } {
  const oci = /^sha256:([0-9a-f]{64})$/.exec(text);
  if (oci) return { codec: RAW_CODEC, hex: oci[1]! };
  let cid: CID;
  try {
    cid = CID.parse(text);
  } catch {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${text}' is not a CID`, { hint: 'expected bafk… or bagaaiera…' });
  }
  if (cid.version !== 1 || cid.multihash.code !== SHA2_256) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `CID ${text} is not a CIDv1 with sha2-256`);
  }
  return { codec: cid.code, hex: Buffer.from(cid.multihash.digest).toString('hex') };
}

export function isCid(text: string): boolean {
  try {
    parseCid(text);
    return true;
  } catch {
    return false;
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Canonical JSON: keys sorted by code unit, no insignificant whitespace, UTF-8. */
export function canonicalJson(value: unknown): Buffer {
  return Buffer.from(stringify(value), 'utf8');
}

/** canonicalJson's text of `value`: a part of a document written in pieces (a layer's manifest). */
export function canonicalJsonText(value: unknown): string {
  return stringify(value);
}

function stringify(v: unknown): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new TypeError(`canonical JSON holds integers only, got ${v}`);
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map(stringify).join(',')}]`;
  if (typeof v === 'object') {
    const keys = Object.keys(v as object).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stringify((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  throw new TypeError(`cannot encode ${typeof v} as canonical JSON`);
}

/**
 * One block through the cache and the codec: the step every format's compression job
 * shares. A cached record is used only when it carries this user's seal or decompresses to
 * exactly the raw block in hand (the cache is untrusted input); otherwise the block is
 * compressed and the result cached.
 */
import { createHash } from 'node:crypto';
import type { BlockCache, CachedBlock, CachePlace } from './block-cache.js';
import type { Codec } from './codecs.js';

export interface CompressedBlock {
  /** 'raw': compression did not shrink the block, `data` is the raw block itself. */
  kind: 'raw' | 'compressed';
  data: Uint8Array;
  /** 'hit' / 'miss' with a cache, 'none' without. */
  cache: 'hit' | 'miss' | 'none';
  /** sha256 of the raw block (32 bytes): hashed here, or from a sealed record found by position. */
  digest: Uint8Array;
  /** True when `data` views a buffer of its own (a cache record's) that may be transferred. */
  owned: boolean;
}

/** True when `b` is a faithful record of `raw` for `codec`. */
export function recordMatches(codec: Codec, raw: Uint8Array, b: CachedBlock): boolean {
  if (b.raw) return true; // no payload: the output is the raw block in hand
  const out = codec.decompress(b.data, raw.length);
  return out.length === raw.length && Buffer.compare(out, raw) === 0;
}

/**
 * Compresses `raw` with `codec`, through `cache` when there is one (records filed at `place`,
 * keyed by position when `place.at` is given, else by content).
 */
export function compressCached(codec: Codec, cache: BlockCache | undefined, raw: Uint8Array, place: CachePlace): CompressedBlock {
  let digest: Buffer | undefined;
  const sha = () => (digest ??= createHash('sha256').update(raw).digest());
  let key: string | undefined;
  if (cache) {
    key = place.at !== undefined ? cache.positionKey(place.tag, place.at) : cache.key(sha().toString('hex'));
    const accept = (b: CachedBlock) => recordMatches(codec, raw, b);
    // Not at this position: the same bytes may be cached from elsewhere (another version of the layer).
    const hit = cache.get(key, raw.length, accept) ?? (place.at !== undefined ? cache.get(cache.key(sha().toString('hex')), raw.length, accept) : undefined);
    if (hit) {
      // (a 32-byte copy: the record's digest views its whole buffer, which may be transferred)
      const d = hit.sealed ? new Uint8Array(hit.rawDigest) : new Uint8Array(sha());
      return hit.raw
        ? { kind: 'raw', data: raw, cache: 'hit', digest: d, owned: false }
        : { kind: 'compressed', data: hit.data, cache: 'hit', digest: d, owned: true };
    }
  }
  const out = codec.compress(raw);
  const shrunk = out.length < raw.length;
  if (cache && key) cache.put(key, raw.length, { raw: !shrunk, data: out }, place, sha());
  const c = cache ? 'miss' : 'none';
  const d = new Uint8Array(sha());
  return shrunk ? { kind: 'compressed', data: out, cache: c, digest: d, owned: false } : { kind: 'raw', data: raw, cache: c, digest: d, owned: false };
}

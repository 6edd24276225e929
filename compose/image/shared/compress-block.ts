/**
 * One block through the cache and the codec: the step every format's compression job
 * shares. A cached record is used only when it decompresses to exactly the raw block in hand
 * (the cache is untrusted input); otherwise the block is compressed and the result cached.
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
}

/** True when `b` is a faithful record of `raw` for `codec`. */
export function recordMatches(codec: Codec, raw: Uint8Array, b: CachedBlock): boolean {
  if (b.raw) return true; // no payload: the output is the raw block in hand
  const out = codec.decompress(b.data, raw.length);
  return out.length === raw.length && Buffer.compare(out, raw) === 0;
}

/**
 * Compresses `raw` with `codec`, through `cache` when there is one (records filed at `place`).
 * `rawDigestHex` is the hex sha256 of `raw` when the caller has it already (it is computed
 * here otherwise).
 */
export function compressCached(codec: Codec, cache: BlockCache | undefined, raw: Uint8Array, place: CachePlace, rawDigestHex?: string): CompressedBlock {
  let key: string | undefined;
  if (cache) {
    key = cache.key(rawDigestHex ?? createHash('sha256').update(raw).digest('hex'));
    const hit = cache.get(key, raw.length, (b) => recordMatches(codec, raw, b));
    if (hit) return hit.raw ? { kind: 'raw', data: raw, cache: 'hit' } : { kind: 'compressed', data: hit.data, cache: 'hit' };
  }
  const out = codec.compress(raw);
  const shrunk = out.length < raw.length;
  if (cache && key) cache.put(key, raw.length, { raw: !shrunk, data: out }, place);
  const c = cache ? 'miss' : 'none';
  return shrunk ? { kind: 'compressed', data: out, cache: c } : { kind: 'raw', data: raw, cache: c };
}

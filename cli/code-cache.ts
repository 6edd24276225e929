/**
 * The CLI's bundle compiled from V8's code cache (spec/decisions.md, "The bundle runs from V8's
 * code cache"). Most of a short command's own time was V8 parsing and compiling strata's
 * JavaScript, again at every start: a fifth of a 20 MiB import's CPU. `npm run build` writes,
 * beside the bundle, the bytecode of the functions a few commands ran (cli/bundle.mjs), and
 * the bundle is compiled with it: what V8 finds there it deserialises instead of compiling.
 *
 * File: MAGIC, the sha256 of the bundle's bytes, the sha256 of the payload, the payload (what
 * `vm.Script#createCachedData` gave). V8 checks its own version and flags against the payload,
 * but the source only by its length, and a release build of V8 does not checksum the payload.
 * So the cache is used only for the very bytes it was made from and only whole: any other file
 * (missing, short, of another build, damaged, far too large to be one, which is not read) costs
 * the compile it would have cost anyway, and never changes what runs. It sits beside the
 * bundle, as trusted as the bundle itself: whoever can write one can write the other.
 */
import { isAscii } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as vm from 'node:vm';

const MAGIC = Buffer.from('strata code cache 1\n');
const DIGEST = 32;
const HEADER = MAGIC.length + 2 * DIGEST;
/** A larger file is not read: the cache of the whole CLI is about 1 MB. */
const MAX_CACHE = 64 << 20;

/** What became of the cache: `used` when V8 took it; otherwise why not. */
export type CacheState = 'used' | 'absent' | 'foreign' | 'damaged' | 'rejected';

export interface Bundle {
  readonly state: CacheState;
  /** Runs the bundle as CommonJS (its exports are not needed: it is the program). */
  run(): void;
  /** The cache of what this process compiled so far, cached or not, written to `cacheFile` (replaced whole). */
  saveCache(): void;
}

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

/** The payload of `cache` if it was made from the bundle whose sha256 is `source`, else why not. */
export function cachePayload(cache: Buffer | undefined, source: Buffer): Buffer | Exclude<CacheState, 'used' | 'rejected'> {
  if (cache === undefined) return 'absent';
  if (cache.length < HEADER || !cache.subarray(0, MAGIC.length).equals(MAGIC)) return 'damaged';
  if (!cache.subarray(MAGIC.length, MAGIC.length + DIGEST).equals(source)) return 'foreign';
  const payload = cache.subarray(HEADER);
  return sha256(payload).equals(cache.subarray(MAGIC.length + DIGEST, HEADER)) ? payload : 'damaged';
}

/** The cache file's bytes; undefined when there is none to read, empty when it is too large to be one. */
function readCache(file: string): Buffer | undefined {
  try {
    return statSync(file).size > MAX_CACHE ? Buffer.alloc(0) : readFileSync(file);
  } catch {
    return undefined;
  }
}

/**
 * Compiles the CommonJS bundle at `file` with the code cache at `cacheFile` where it fits
 * (none: `cacheFile` undefined).
 * The bundle's text is wrapped as Node wraps a CommonJS module, on its first line, so that
 * positions in stack traces stay right below it.
 */
export function loadBundle(file: string, cacheFile: string | undefined): Bundle {
  const bytes = readFileSync(file);
  const digest = sha256(bytes);
  const found = cachePayload(cacheFile === undefined ? undefined : readCache(cacheFile), digest);
  // The build leaves the bundle ASCII (cli/bundle.mjs): Latin-1 decodes it four times as fast
  // as UTF-8, into text that V8 keeps at one byte a character.
  let text = bytes.toString(isAscii(bytes) ? 'latin1' : 'utf8');
  // A hashbang is a comment only on a script's first line, which the wrapper takes.
  if (text.startsWith('#!')) text = `//${text.slice(2)}`;
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${text}\n})`, {
    filename: file,
    cachedData: typeof found === 'string' ? undefined : found,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const state: CacheState = typeof found === 'string' ? found : script.cachedDataRejected ? 'rejected' : 'used';
  return {
    state,
    run() {
      const module = { exports: {} };
      (script.runInThisContext() as (...args: unknown[]) => void).call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
    },
    saveCache() {
      if (cacheFile === undefined) throw new Error('no cache file to write');
      const payload = script.createCachedData();
      const tmp = join(dirname(cacheFile), `.${randomBytes(6).toString('hex')}.tmp`);
      try {
        writeFileSync(tmp, Buffer.concat([MAGIC, digest, sha256(payload), payload]), { flag: 'wx', mode: 0o644 });
        renameSync(tmp, cacheFile);
      } catch (e) {
        rmSync(tmp, { force: true });
        throw e;
      }
    },
  };
}

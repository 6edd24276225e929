/**
 * Blob transfers: the bounded, resumable download and the resumable upload. Each is one
 * operation with one retry budget (retry.ts): tries that move less than the progress floor
 * use tries up, and the whole transfer ends by its deadline (its size at the minimum rate on
 * top of the base deadline).
 *
 * Download (downloadBlob): the body is bounded by the blob's declared size — a Content-Length
 * or a Content-Range total other than that size is refused at once, and a body that runs past
 * it is cut at the first extra byte (ERR_REGISTRY; nothing beyond `size` is ever yielded). A
 * body that stops short is resumed with `Range: bytes=<received>-` (a 200 answer has the
 * received prefix skipped). The sha256 of all yielded bytes is checked at the end.
 *
 * Upload (uploadBlob): HEAD first; a blob up to `chunkSize` goes in one PUT, a larger one in
 * PATCH chunks. After a dropped connection, 5xx or 429, the session's status is asked and the
 * upload resumes at the registry's offset when the session survived, else starts again with a
 * new one. Session URLs (Location) may point elsewhere only for an unconfined upload, and then
 * get no credentials; a confined upload (a restricted module) refuses any session URL off the
 * registry's origin before sending a byte there.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { StrataError, STORE_ERR } from '../errors.js';
import { type Endpoints, nextOffset, withDigest } from './endpoints.js';
import { describeNetError, drain, isNetError } from './http.js';
import { oneLine, type Requester } from './requests.js';

/** Reports payload bytes once each: bytes sent again after a resume are not counted twice. */
export function progressCounter(onProgress: ((bytes: number) => void) | undefined): (pos: number) => void {
  let high = 0;
  return (pos: number) => {
    if (pos > high) {
      const d = pos - high;
      high = pos;
      onProgress?.(d);
    }
  };
}

// ---- download --------------------------------------------------------------------------------

/**
 * The blob's bytes (see the file comment). Each chunk is yielded once, in order; a digest
 * mismatch throws ERR_DIGEST_MISMATCH *after* the last chunk, so the caller writes to a
 * temporary place and commits only once iteration finished without throwing. Breaking out
 * of the loop closes the connection. ERR_NOT_FOUND when the registry has no such blob.
 */
export async function* downloadBlob(r: Requester, ep: Endpoints, digest: string, size: number,
                                    onProgress?: (bytes: number) => void): AsyncGenerator<Buffer, void, undefined> {
  const what = `download of blob ${digest}`;
  const url = ep.blob(digest);
  const attempts = r.attempts(what, size);
  const hash = createHash('sha256');
  const progress = progressCounter(onProgress);
  const tooLong = (n: number | string) => new StrataError(STORE_ERR.REGISTRY,
    `registry ${ep.host} sent ${n} bytes for blob ${digest} of ${size} bytes`, {
      hint: 'the registry copy or the manifest naming it is damaged or forged; push the module again from a good store',
    });
  let pos = 0;
  while (pos < size || size === 0) {
    const headers: Record<string, string> = pos > 0 ? { range: `bytes=${pos}-` } : {};
    const res = await r.call({ method: 'GET', url, action: 'pull', what, headers }, attempts);
    let skip = 0;
    const len = res.headers['content-length'] !== undefined ? Number(res.headers['content-length']) : undefined;
    if (res.statusCode === 200) {
      skip = pos;
      if (len !== undefined && len !== size) {
        res.destroy();
        throw tooLong(len);
      }
    } else if (res.statusCode === 206 && pos > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
      const start = m ? Number(m[1]) : NaN;
      if (!m || start > pos || (m[3] !== '*' && Number(m[3]) !== size)) {
        res.destroy();
        throw new StrataError(STORE_ERR.REGISTRY, `registry ${ep.host} answered a resumed ${what} with a bad Content-Range`);
      }
      skip = pos - start;
      if (len !== undefined && start + len > size) {
        res.destroy();
        throw tooLong(`${start}+${len}`);
      }
    } else if (res.statusCode === 404) {
      await drain(res);
      throw new StrataError(STORE_ERR.NOT_FOUND, `registry ${ep.host} has no blob ${digest} in ${ep.repo}`, {
        hint: 'push it again, or pull from the registry it was pushed to',
      });
    } else {
      throw await r.statusError(res, what);
    }
    const before = pos;
    let dropped: string | undefined;
    try {
      for await (const chunk of res) {
        let b = chunk as Buffer;
        if (skip > 0) {
          if (b.length <= skip) {
            skip -= b.length;
            continue;
          }
          b = b.subarray(skip);
          skip = 0;
        }
        if (pos + b.length > size) throw tooLong(`more than ${size}`);
        hash.update(b);
        pos += b.length;
        progress(pos);
        yield b;
      }
      if (pos < size) dropped = `connection closed at byte ${pos} of ${size}`;
    } catch (e) {
      if (!isNetError(e) && (e as { message?: string }).message !== 'aborted') throw e;
      dropped = describeNetError(e);
    } finally {
      if (!res.complete) res.destroy();
    }
    if (dropped === undefined) break;
    await attempts.failed(dropped, pos - before);
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== digest) {
    throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry sent wrong content for ${digest}`, {
      hint: `the registry's copy is damaged (it hashes to ${got}); push the blob again from a good store`,
    });
  }
}

// ---- upload ----------------------------------------------------------------------------------

export interface UploadOptions {
  /** Blobs up to this size go in one PUT, larger ones in PATCH chunks of this size. */
  chunkSize: number;
  /** Refuse upload sessions off the registry's origin (restricted content). */
  confined: boolean;
  onProgress?: (bytes: number) => void;
  /** HEAD of the blob (the client's hasBlob). */
  has(digest: string): Promise<boolean>;
}

/** Thrown inside an upload to go round its retry loop: keep the session or open a new one. */
class UploadRetry extends Error {
  constructor(readonly reason: string, readonly session: 'probe' | 'restart') {
    super(reason);
  }
}

/** Pulls exact byte counts out of a caller's iterable. */
class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #left: Uint8Array | undefined;
  pos: number;
  constructor(src: AsyncIterable<Uint8Array>, pos: number) {
    this.#it = src[Symbol.asyncIterator]();
    this.pos = pos;
  }
  async *take(n: number, tooShort: (pos: number) => Error): AsyncGenerator<Uint8Array> {
    let need = n;
    while (need > 0) {
      let b = this.#left;
      this.#left = undefined;
      if (!b) {
        const r = await this.#it.next();
        if (r.done) throw tooShort(this.pos);
        b = r.value;
      }
      if (b.length > need) {
        this.#left = b.subarray(need);
        b = b.subarray(0, need);
      }
      need -= b.length;
      this.pos += b.length;
      if (b.length > 0) yield b;
    }
  }
  async atEnd(): Promise<boolean> {
    if (this.#left && this.#left.length > 0) return false;
    for (;;) {
      const r = await this.#it.next();
      if (r.done) return true;
      if (r.value.length > 0) return false;
    }
  }
  async close(): Promise<void> {
    try {
      await this.#it.return?.();
    } catch { /* the source's own cleanup failure is not ours to report */ }
  }
}

/**
 * Uploads the blob unless the registry has it (see the file comment and
 * RegistryClient.putBlob for the contract of `open`).
 */
export async function uploadBlob(r: Requester, ep: Endpoints, digest: string, size: number,
                                 open: (offset: number) => AsyncIterable<Uint8Array>,
                                 opts: UploadOptions): Promise<'exists' | 'uploaded'> {
  if (await opts.has(digest)) return 'exists';
  const what = `upload of blob ${digest}`;
  const attempts = r.attempts(what, size);
  const progress = progressCounter(opts.onProgress);
  const tooShort = (pos: number) => new StrataError(STORE_ERR.DIGEST_MISMATCH,
    `the content given for ${digest} ended at byte ${pos} of ${size}`, { hint: 'the local blob is damaged; run strata store verify' });

  /** A Location from the registry, held to the confinement rule. */
  const sessionUrl = (loc: string | undefined, from: URL): URL => {
    if (!loc) return from;
    const u = ep.resolve(loc, from, what);
    if (opts.confined && !ep.isOwn(u)) {
      throw new StrataError(STORE_ERR.REGISTRY,
        `registry ${ep.host} moved the ${what} to another host (${oneLine(u.host, 80)}); refused for restricted content`, {
          hint: 'a site-internal remote must keep uploads on its own host; check the registry\'s storage redirect settings',
        });
    }
    return u;
  };

  const startUpload = async (): Promise<URL> => {
    const res = await r.call({ method: 'POST', url: ep.uploads(), action: 'push', what, headers: { 'content-length': '0' } }, attempts);
    if (res.statusCode !== 202) {
      if ((res.statusCode ?? 0) >= 500) {
        await drain(res);
        throw new UploadRetry(`HTTP ${res.statusCode}`, 'restart');
      }
      throw await r.statusError(res, what);
    }
    await drain(res);
    if (!res.headers.location) throw new StrataError(STORE_ERR.REGISTRY, `registry ${ep.host} opened an upload without a Location`);
    return sessionUrl(res.headers.location, ep.uploads());
  };

  /** Session status: where to resume, or undefined when the session is gone. */
  const uploadStatus = async (session: URL): Promise<{ location: URL; offset: number } | undefined> => {
    const res = await r.call({ method: 'GET', url: session, action: 'push', what }, attempts);
    await drain(res);
    if (res.statusCode === 204 || res.statusCode === 200) {
      const offset = nextOffset(res.headers.range as string | undefined);
      if (offset === undefined) return undefined;
      return { location: sessionUrl(res.headers.location, session), offset };
    }
    if (res.statusCode === 401 || res.statusCode === 403) throw await r.statusError(res, what);
    return undefined;
  };

  /** Classifies a failed upload response: retry (same or new session) or a final error. */
  const uploadFailure = async (res: IncomingMessage): Promise<Error> => {
    const status = res.statusCode ?? 0;
    if (status >= 500 || status === 429) {
      await drain(res);
      return new UploadRetry(`HTTP ${status}`, 'probe');
    }
    if (status === 416) {
      await drain(res);
      return new UploadRetry('HTTP 416 (registry is at another offset)', 'restart');
    }
    const err = await r.statusError(res, what);
    if (status === 404 || /BLOB_UPLOAD_(UNKNOWN|INVALID)/.test(err.message)) {
      return new UploadRetry(`upload session lost (${oneLine(err.message, 80)})`, 'restart');
    }
    return err;
  };

  const finishUpload = async (res: IncomingMessage, resumed: boolean, cleanRetryDone: boolean): Promise<void> => {
    if (res.statusCode === 201 || res.statusCode === 204) {
      await drain(res);
      return;
    }
    const err = await uploadFailure(res);
    if (err instanceof UploadRetry || !/DIGEST_INVALID|SIZE_INVALID/.test(err.message)) throw err;
    // A resumed session may have kept bytes of a dropped request: start once from scratch.
    if (resumed && !cleanRetryDone) throw new UploadRetry('registry computed another digest (DIGEST_INVALID)', 'restart');
    throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry ${ep.host} refused ${what}: the content does not hash to the digest`, {
      hint: 'the local blob is damaged or changed while uploading; run strata store verify',
    });
  };

  /** One try with a streaming body; a 401 drops the cached token and goes round again. */
  const sendStream = async (method: string, url: URL, headers: Record<string, string>,
                            body: AsyncIterable<Uint8Array> | undefined): Promise<IncomingMessage> => {
    const res = await r.once(method, url, 'push', headers, body, attempts.deadline);
    if (res.statusCode === 401) {
      await drain(res);
      r.auth.clearTokens();
      throw new UploadRetry('HTTP 401 (authorization expired)', 'probe');
    }
    return res;
  };

  let session: URL | undefined;
  let offset = 0;
  let needProbe = false;
  let resumed = false;
  let cleanRetryDone = false;
  let failed = false;
  let reader: ByteReader | undefined;
  const readerAt = async (off: number): Promise<ByteReader> => {
    if (reader && reader.pos === off) return reader;
    await reader?.close();
    reader = new ByteReader(open(off), off);
    return reader;
  };
  const body = (rd: ByteReader, n: number): AsyncIterable<Uint8Array> => {
    const it = rd.take(n, tooShort);
    return (async function* () {
      for await (const b of it) {
        yield b;
        progress(rd.pos);
      }
    })();
  };
  const longSource = () => new StrataError(STORE_ERR.DIGEST_MISMATCH, `the content given for ${digest} is longer than its size ${size}`, {
    hint: 'the local blob is damaged; run strata store verify',
  });

  try {
    for (;;) {
      try {
        if (session && needProbe) {
          const st = await uploadStatus(session);
          needProbe = false;
          if (st) {
            session = st.location;
            offset = st.offset;
            if (offset > 0) resumed = true;
          } else {
            session = undefined;
          }
        }
        if (!session) {
          await reader?.close();
          reader = undefined;
          if (failed && (await opts.has(digest))) return 'uploaded';
          session = await startUpload();
          offset = 0;
          resumed = false;
        }
        if (offset === 0 && size <= opts.chunkSize) {
          const rd = await readerAt(0);
          const res = await sendStream('PUT', withDigest(session, digest), {
            'content-type': 'application/octet-stream',
            'content-length': String(size),
          }, body(rd, size));
          await finishUpload(res, resumed, cleanRetryDone);
          // Stored and verified by the registry; a source running past `size` is still a bug.
          if (!(await rd.atEnd())) throw longSource();
          return 'uploaded';
        }
        while (offset < size) {
          const n = Math.min(opts.chunkSize, size - offset);
          const rd = await readerAt(offset);
          const res = await sendStream('PATCH', session, {
            'content-type': 'application/octet-stream',
            'content-length': String(n),
            'content-range': `${offset}-${offset + n - 1}`,
          }, body(rd, n));
          if (res.statusCode !== 202) throw await uploadFailure(res);
          await drain(res);
          session = sessionUrl(res.headers.location, session);
          const next = nextOffset(res.headers.range as string | undefined) ?? offset + n;
          if (next !== offset + n) {
            // The registry kept a different amount than we sent: follow its word.
            await reader?.close();
            reader = undefined;
          }
          offset = next;
          attempts.progressed();
        }
        if (reader && reader.pos === size && !(await reader.atEnd())) throw longSource();
        const res = await sendStream('PUT', withDigest(session, digest), { 'content-length': '0' }, undefined);
        await finishUpload(res, resumed, cleanRetryDone);
        return 'uploaded';
      } catch (e) {
        await reader?.close();
        reader = undefined;
        let reason: string;
        if (e instanceof UploadRetry) {
          reason = e.reason;
          if (e.session === 'restart') {
            if (e.reason.includes('DIGEST_INVALID')) cleanRetryDone = true;
            session = undefined;
          } else needProbe = true;
        } else if (isNetError(e)) {
          reason = describeNetError(e);
          needProbe = true;
        } else {
          throw e;
        }
        failed = true;
        await attempts.failed(reason);
      }
    }
  } finally {
    await reader?.close();
  }
}

/*
 * sha256 through the process's own libcrypto: Node links OpenSSL (statically or not), and its
 * EVP calls are found in the process at run time, so nothing more is built or linked and the
 * hashing uses the same SHA instructions Node's crypto does.
 *
 * JS surface (native/sha256.ts wraps the stream calls):
 *   hashOpen() -> stream                        a sha256 context, freed with the object
 *   hashUpdate(stream, bytes) -> Promise<void>  hashes `bytes` on a thread of libuv's pool; the
 *                                               caller leaves them as they are and calls nothing
 *                                               else on the stream until the promise settles
 *   hashDigest(stream) -> hex                   once, with no update outstanding
 *   hashCopy(src, srcAt, length, dst, dstAt, writeback?) -> Promise<hex>
 *   hashRead(stream, fd, at, length) -> Promise<void>
 *                                               `length` bytes of descriptor `fd` from `at`
 *                                               hashed into the stream on the pool, as
 *                                               hashUpdate hashes bytes (one at a time)
 *   sha256Into(data, out)
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include "native.h"

/* ---- sha256 from the process's libcrypto ------------------------------------------------ */

typedef struct evp_md EVP_MD;
static struct {
  bool tried, ok;
  EVP_MD_CTX *(*ctx_new)(void);
  void (*ctx_free)(EVP_MD_CTX *);
  const EVP_MD *(*sha256)(void);
  int (*init)(EVP_MD_CTX *, const EVP_MD *, void *);
  int (*update)(EVP_MD_CTX *, const void *, size_t);
  int (*final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
  /* The low-level one-buffer calls (sha256Into); optional: `short_ok`. */
  bool short_ok;
  int (*short_init)(void *);
  int (*short_update)(void *, const void *, size_t);
  int (*short_final)(unsigned char *, void *);
} ossl;

/* Resolves the libcrypto calls once (on the JS thread: extractAvailable, extractOpen, the calls below). */
bool sha256_available(void) {
  if (ossl.tried) return ossl.ok;
  ossl.tried = true;
  ossl.ctx_new = (EVP_MD_CTX * (*)(void)) dlsym(RTLD_DEFAULT, "EVP_MD_CTX_new");
  ossl.ctx_free = (void (*)(EVP_MD_CTX *))dlsym(RTLD_DEFAULT, "EVP_MD_CTX_free");
  ossl.sha256 = (const EVP_MD *(*)(void))dlsym(RTLD_DEFAULT, "EVP_sha256");
  ossl.init = (int (*)(EVP_MD_CTX *, const EVP_MD *, void *))dlsym(RTLD_DEFAULT, "EVP_DigestInit_ex");
  ossl.update = (int (*)(EVP_MD_CTX *, const void *, size_t))dlsym(RTLD_DEFAULT, "EVP_DigestUpdate");
  ossl.final = (int (*)(EVP_MD_CTX *, unsigned char *, unsigned int *))dlsym(RTLD_DEFAULT, "EVP_DigestFinal_ex");
  ossl.ok = ossl.ctx_new && ossl.ctx_free && ossl.sha256 && ossl.init && ossl.update && ossl.final;
  ossl.short_init = (int (*)(void *))dlsym(RTLD_DEFAULT, "SHA256_Init");
  ossl.short_update = (int (*)(void *, const void *, size_t))dlsym(RTLD_DEFAULT, "SHA256_Update");
  ossl.short_final = (int (*)(unsigned char *, void *))dlsym(RTLD_DEFAULT, "SHA256_Final");
  ossl.short_ok = ossl.short_init && ossl.short_update && ossl.short_final;
  return ossl.ok;
}

EVP_MD_CTX *sha256_new(void) {
  EVP_MD_CTX *c = ossl.ctx_new();
  if (c != NULL && ossl.init(c, ossl.sha256(), NULL) != 1) {
    ossl.ctx_free(c);
    c = NULL;
  }
  return c;
}

void sha256_hex(EVP_MD_CTX *c, char out[65]) {
  unsigned char md[32];
  unsigned int n = 0;
  ossl.final(c, md, &n);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void sha256_update(EVP_MD_CTX *c, const void *data, size_t n) { ossl.update(c, data, n); }

void sha256_free(EVP_MD_CTX *c) { ossl.ctx_free(c); }

/* ---- a stream hashed on libuv's pool ------------------------------------------------------
 *
 * The sha256 of every large stream (a layer written by an import or read by an output) is
 * computed here, one chunk after the other on whichever pool thread is free: no thread of its
 * own and no JS isolate (a worker thread cost about 40 ms of CPU to start and its messages on
 * top), and streams of different layers hash at once. The JS side keeps the order (one update
 * at a time per stream); this side checks it.
 */
typedef struct {
  EVP_MD_CTX *ctx;
  bool busy, spent;
} hash_stream;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  hash_stream *s;
  /* The stream object and the bytes, kept alive until the work is done. */
  napi_ref stream_ref, bytes_ref;
  const void *data;
  size_t len;
} update_job;

static void stream_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  hash_stream *s = data;
  if (s->ctx != NULL) sha256_free(s->ctx);
  free(s);
}

/* Marks a stream's External, so that no other object (an extraction session's) passes for one. */
static const napi_type_tag STREAM_TAG = {0x7374726174612d73ULL, 0x6861323536737431ULL};

static hash_stream *stream_arg(napi_env env, napi_value v, const char *usage) {
  hash_stream *s = tagged_external_data(env, v, &STREAM_TAG, usage);
  if (s == NULL) return NULL;
  if (s->busy || s->spent) {
    napi_throw_error(env, "ERR_INVALID_STATE", s->spent ? "the sha256 stream's digest was already taken" : "the sha256 stream has an update outstanding");
    return NULL;
  }
  return s;
}

static napi_value js_hash_open(napi_env env, napi_callback_info info) {
  (void)info;
  if (!sha256_available()) {
    napi_throw_error(env, "ENOSYS", "hashOpen: sha256 is not available from the process's libcrypto");
    return NULL;
  }
  hash_stream *s = calloc(1, sizeof *s);
  if (s == NULL || (s->ctx = sha256_new()) == NULL) {
    free(s);
    napi_throw_error(env, "ENOMEM", "hashOpen: out of memory");
    return NULL;
  }
  napi_value v = tagged_external(env, s, stream_finalize, &STREAM_TAG);
  if (v == NULL) {
    sha256_free(s->ctx);
    free(s);
  }
  return v;
}

static void update_execute(napi_env env, void *data) {
  (void)env;
  update_job *j = data;
  sha256_update(j->s->ctx, j->data, j->len);
}

static void update_complete(napi_env env, napi_status status, void *data) {
  update_job *j = data;
  j->s->busy = false;
  napi_delete_reference(env, j->stream_ref);
  napi_delete_reference(env, j->bytes_ref);
  napi_value v = NULL;
  if (status == napi_ok) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, j->deferred, v);
  } else {
    /* Cancelled: the bytes were not hashed, so the stream's digest would be wrong. */
    j->s->spent = true;
    napi_value code, msg;
    napi_create_string_utf8(env, "EIO", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "hashUpdate: the work was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_reject_deferred(env, j->deferred, v);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_hash_update(napi_env env, napi_callback_info info) {
  static const char usage[] = "hashUpdate(stream from hashOpen, bytes: Uint8Array)";
  size_t argc = 2;
  napi_value argv[2];
  void *data = NULL;
  size_t len = 0;
  napi_typedarray_type type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
    return NULL;
  }
  hash_stream *s = stream_arg(env, argv[0], usage);
  if (s == NULL) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
    return NULL;
  }
  update_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "hashUpdate: out of memory");
    return NULL;
  }
  j->s = s;
  j->data = data;
  j->len = len;
  napi_value promise = NULL;
  if (napi_create_reference(env, argv[0], 1, &j->stream_ref) != napi_ok || napi_create_reference(env, argv[1], 1, &j->bytes_ref) != napi_ok) {
    throw_pending(env, "napi_create_reference");
  } else {
    promise = queue_job(env, "hashUpdate", update_execute, update_complete, j, &j->work, &j->deferred);
  }
  if (promise == NULL) {
    if (j->stream_ref != NULL) napi_delete_reference(env, j->stream_ref);
    if (j->bytes_ref != NULL) napi_delete_reference(env, j->bytes_ref);
    free(j);
    return NULL;
  }
  s->busy = true;
  return promise;
}

static napi_value js_hash_digest(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hashDigest(stream from hashOpen)");
    return NULL;
  }
  hash_stream *s = stream_arg(env, argv[0], "hashDigest(stream from hashOpen)");
  if (s == NULL) return NULL;
  char hex[65];
  sha256_hex(s->ctx, hex);
  s->spent = true;
  if (napi_create_string_utf8(env, hex, 64, &v) != napi_ok) {
    throw_pending(env, "napi_create_string_utf8");
    return NULL;
  }
  return v;
}

/* ---- a byte range hashed, and copied, on libuv's pool --------------------------------------- */

/*
 * hashCopy(src, srcAt, length, dst, dstAt): reads `length` bytes of descriptor `src` from
 * `srcAt` (pread), hashes them, and writes them to descriptor `dst` at `dstAt` (pwrite; none
 * when dst is -1), a MiB at a time on one thread of the pool; resolves to the sha256 (hex) of
 * the bytes read. What an image writer does with its segments (compose/image/shared/
 * segment-cache.ts) and its digest, without a chunk passing through the JS thread. With
 * `writeback` the writeback of the bytes written is started as they go (sync_file_range,
 * SYNC_FILE_RANGE_WRITE, every WRITEBACK_STEP and at the end): for a file about to be
 * synced, the disk takes them while the rest is made. Rejects with the errno of a failed read
 * or write, or ERR_OUT_OF_RANGE when the source ends early.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int src, dst;
  int64_t src_at, dst_at, length;
  /* hashRead: the stream the bytes go into (kept alive by stream_ref); else a context of the job's own. */
  hash_stream *s;
  napi_ref stream_ref;
  int err;
  const char *syscall;
  bool short_read, done;
  /* hashCopy: start the writeback of what was written every WRITEBACK_STEP. */
  bool writeback;
  char hex[65];
} copy_job;

#define COPY_CHUNK (1 << 20)
#define WRITEBACK_STEP (16 << 20)

static void copy_execute(napi_env env, void *data) {
  (void)env;
  copy_job *j = data;
  EVP_MD_CTX *h = j->s != NULL ? j->s->ctx : sha256_new();
  unsigned char *buf = malloc(COPY_CHUNK);
  if (h == NULL || buf == NULL) {
    j->err = ENOMEM;
    j->syscall = "malloc";
    goto done;
  }
  int64_t kicked = 0;
  for (int64_t off = 0; off < j->length;) {
    size_t want = (size_t)(j->length - off < COPY_CHUNK ? j->length - off : COPY_CHUNK);
    ssize_t n = pread(j->src, buf, want, (off_t)(j->src_at + off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      j->err = errno;
      j->syscall = "pread";
      goto done;
    }
    if (n == 0) {
      j->short_read = true;
      goto done;
    }
    sha256_update(h, buf, (size_t)n);
    for (ssize_t w = 0; j->dst >= 0 && w < n;) {
      ssize_t m = pwrite(j->dst, buf + w, (size_t)(n - w), (off_t)(j->dst_at + off + w));
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {
        j->err = m < 0 ? errno : EIO;
        j->syscall = "pwrite";
        goto done;
      }
      w += m;
    }
    off += n;
    /* A hint (the destination's fsync decides): a failure changes nothing. */
    if (j->writeback && (off - kicked >= WRITEBACK_STEP || off == j->length)) {
      sync_file_range(j->dst, (off64_t)(j->dst_at + kicked), (off64_t)(off - kicked), SYNC_FILE_RANGE_WRITE);
      kicked = off;
    }
  }
  if (j->s == NULL) sha256_hex(h, j->hex);
  j->done = true;
done:
  if (h != NULL && j->s == NULL) sha256_free(h);
  free(buf);
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  copy_job *j = data;
  napi_value v = NULL, code, msg;
  const char *name = j->s != NULL ? "hashRead" : "hashCopy";
  bool ok = status == napi_ok && j->done;
  if (j->s != NULL) {
    j->s->busy = false;
    /* Bytes hashed in part, or not at all: the stream's digest would be wrong. */
    if (!ok) j->s->spent = true;
    napi_delete_reference(env, j->stream_ref);
  }
  if (ok && (j->s != NULL ? napi_get_undefined(env, &v) : napi_create_string_utf8(env, j->hex, 64, &v)) == napi_ok) {
    napi_resolve_deferred(env, j->deferred, v);
  } else {
    char text[160];
    const char *c = j->short_read ? "ERR_OUT_OF_RANGE" : "EIO";
    if (j->short_read) snprintf(text, sizeof text, "%s: the source ended before %lld bytes", name, (long long)j->length);
    else if (j->syscall != NULL) snprintf(text, sizeof text, "%s: %s: %s", name, j->syscall, strerror(j->err));
    else snprintf(text, sizeof text, "%s failed", name);
    napi_create_string_utf8(env, c, NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_reject_deferred(env, j->deferred, v);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_hash_copy(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  int32_t src, dst;
  int64_t src_at, length, dst_at;
  bool writeback = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 || napi_get_value_int32(env, argv[0], &src) != napi_ok ||
      !get_offset(env, argv[1], &src_at) || !get_offset(env, argv[2], &length) || napi_get_value_int32(env, argv[3], &dst) != napi_ok ||
      !get_offset(env, argv[4], &dst_at) || src < 0 || dst < -1 || (argc > 5 && napi_get_value_bool(env, argv[5], &writeback) != napi_ok)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hashCopy(src: fd, srcAt, length, dst: fd or -1, dstAt, writeback?: boolean)");
    return NULL;
  }
  if (!sha256_available()) {
    napi_throw_error(env, "ENOSYS", "hashCopy: sha256 is not available from the process's libcrypto");
    return NULL;
  }
  copy_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "hashCopy: out of memory");
    return NULL;
  }
  j->src = src;
  j->dst = dst;
  j->src_at = src_at;
  j->dst_at = dst_at;
  j->length = length;
  j->writeback = writeback && dst >= 0;
  napi_value promise = queue_job(env, "hashCopy", copy_execute, copy_complete, j, &j->work, &j->deferred);
  if (promise == NULL) free(j);
  return promise;
}

static napi_value js_hash_read(napi_env env, napi_callback_info info) {
  static const char usage[] = "hashRead(stream from hashOpen, fd, at, length)";
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  int64_t at, length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      !get_offset(env, argv[2], &at) || !get_offset(env, argv[3], &length) || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
    return NULL;
  }
  hash_stream *s = stream_arg(env, argv[0], usage);
  if (s == NULL) return NULL;
  copy_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "hashRead: out of memory");
    return NULL;
  }
  j->src = fd;
  j->dst = -1;
  j->src_at = at;
  j->length = length;
  j->s = s;
  napi_value promise = NULL;
  if (napi_create_reference(env, argv[0], 1, &j->stream_ref) != napi_ok) {
    throw_pending(env, "napi_create_reference");
  } else {
    promise = queue_job(env, "hashRead", copy_execute, copy_complete, j, &j->work, &j->deferred);
  }
  if (promise == NULL) {
    if (j->stream_ref != NULL) napi_delete_reference(env, j->stream_ref);
    free(j);
    return NULL;
  }
  s->busy = true;
  return promise;
}

/* ---- sha256 of one short buffer, on the calling thread -------------------------------------
 *
 * sha256Into(data: Uint8Array, out: Uint8Array): the digest of `data` in out[0, 32). Through the
 * low-level SHA256_* calls of the process's libcrypto (the same SHA instructions Node's crypto
 * uses): for the tail of a small file, a kilobyte, Node's one-call hash spends more on its setup
 * than on the bytes, and an image of a million small files hashes a million tails on its main
 * thread. The calls are resolved with the EVP ones (ossl_load). Throws ENOSYS when they are not
 * there (the caller then uses Node's crypto).
 */
static bool arg_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  napi_typedarray_type type;
  return napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) == napi_ok && type == napi_uint8_array;
}

static napi_value js_sha256_into(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *data = NULL, *out = NULL;
  size_t n = 0, m = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !arg_bytes(env, argv[0], &data, &n) ||
      !arg_bytes(env, argv[1], &out, &m) || m < 32) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "sha256Into(data: Uint8Array, out: Uint8Array of 32 bytes or more)");
    return NULL;
  }
  sha256_available();
  if (!ossl.short_ok) {
    napi_throw_error(env, "ENOSYS", "sha256Into: SHA256_* is not available from the process's libcrypto");
    return NULL;
  }
  /* SHA256_CTX is 112 bytes in every OpenSSL since 0.9.8; room for more, aligned. */
  uint64_t ctx[32];
  if (ossl.short_init(ctx) != 1 || ossl.short_update(ctx, data == NULL ? (const void *)"" : data, n) != 1 || ossl.short_final(out, ctx) != 1) {
    napi_throw_error(env, "EIO", "sha256Into: libcrypto failed");
  }
  return NULL;
}

napi_status sha256_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"hashOpen", NULL, js_hash_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashUpdate", NULL, js_hash_update, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashDigest", NULL, js_hash_digest, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashCopy", NULL, js_hash_copy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashRead", NULL, js_hash_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sha256Into", NULL, js_sha256_into, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

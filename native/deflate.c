/*
 * gzip blocks for images: zlib-wrapped DEFLATE (RFC 1950) by the vendored libdeflate
 * (native/vendor/libdeflate, version pinned there), part of the strata_native addon.
 *
 *   zlibCompress(src: Uint8Array, level: 0..12) -> Buffer      one whole block, synchronous
 *   zlibDecompress(dst: Uint8Array, src: Uint8Array) -> number the zlib stream at the start of
 *                                                              `src` into `dst`: its length
 *   libdeflateVersion: string                                  e.g. "1.14"
 *
 * Why not node:zlib: Node bundles Chromium's zlib fork, whose output follows the Node version
 * and possibly the CPU's SIMD support, is 2 % larger than the zlib mksquashfs uses, and is
 * half libdeflate's speed at the same level (spec/decisions.md, Images). libdeflate compresses
 * a whole buffer at once, which is exactly a SquashFS or EROFS block.
 *
 * Reading: node:zlib's inflateSync sets up a stream (and its 32 KiB window) for every block
 * and inflates at about a third of libdeflate's speed; a gzip image's unsquash spent two
 * fifths of its main thread there. libdeflate decompresses a whole block into a buffer the
 * caller gives, and refuses what does not fit in it (the block size bounds every block) or is
 * not a valid stream: a hostile image gets an error, never a write past `dst`.
 *
 * Each thread that loads the addon (the main thread, every worker) keeps its own compressor
 * per level, one decompressor and one output buffer, freed when that thread's environment
 * goes away.
 */
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "vendor/libdeflate/libdeflate.h"
#include "compressors.h"
#include "instance.h"

#define LEVELS 13 /* libdeflate's levels 0 (stored) to 12 */

typedef struct {
  struct libdeflate_compressor *compressors[LEVELS];
  struct libdeflate_decompressor *decompressor;
  block_out out;
} deflate_state;

static void *state_new(void) { return calloc(1, sizeof(deflate_state)); }

static void state_free(void *data) {
  deflate_state *s = data;
  for (int i = 0; i < LEVELS; i++) libdeflate_free_compressor(s->compressors[i]);
  libdeflate_free_decompressor(s->decompressor);
  free(s->out.buf);
  free(s);
}

/* `p`, a (de)compressor of this thread's state; when it could not be made, throws ENOMEM naming `fn`. */
static void *made(napi_env env, const char *fn, void *p) {
  if (p == NULL) {
    char msg[64];
    snprintf(msg, sizeof msg, "%s: out of memory", fn);
    napi_throw_error(env, "ENOMEM", msg);
  }
  return p;
}

static napi_value js_zlib_compress(napi_env env, napi_callback_info info) {
  static const char fn[] = "zlibCompress";
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  const void *data;
  size_t length;
  if (!block_source(env, argv[0], fn, &data, &length)) return NULL;
  int32_t level = -1;
  if (argv[1] == NULL || napi_get_value_int32(env, argv[1], &level) != napi_ok || level < 0 || level >= LEVELS) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "zlibCompress: level must be 0 to 12");
    return NULL;
  }
  deflate_state *s = instance_slot(env, SLOT_DEFLATE, state_new, state_free);
  if (s != NULL && s->compressors[level] == NULL) s->compressors[level] = libdeflate_alloc_compressor(level);
  struct libdeflate_compressor *c = made(env, fn, s == NULL ? NULL : s->compressors[level]);
  if (c == NULL) return NULL;
  /* The bound always fits, so the result is the same as with any larger buffer. */
  size_t bound = libdeflate_zlib_compress_bound(c, length);
  void *out = block_scratch(env, &s->out, bound, fn);
  if (out == NULL) return NULL;
  return block_result(env, &s->out, libdeflate_zlib_compress(c, data, length, out, bound), fn);
}

static napi_value js_zlib_decompress(napi_env env, napi_callback_info info) {
  static const char fn[] = "zlibDecompress";
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  const void *dst;
  size_t room;
  const void *src;
  size_t length;
  if (!block_source(env, argv[0], fn, &dst, &room) || !block_source(env, argv[1], fn, &src, &length)) return NULL;
  deflate_state *s = instance_slot(env, SLOT_DEFLATE, state_new, state_free);
  if (s != NULL && s->decompressor == NULL) s->decompressor = libdeflate_alloc_decompressor();
  struct libdeflate_decompressor *d = made(env, fn, s == NULL ? NULL : s->decompressor);
  if (d == NULL) return NULL;
  /* Bytes after the stream's end are left alone, as node:zlib's inflate leaves them. */
  size_t in = 0, out = 0;
  enum libdeflate_result r = libdeflate_zlib_decompress_ex(d, src, length, (void *)dst, room, &in, &out);
  if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
    napi_throw_error(env, "ERR_BUFFER_TOO_LARGE", "zlibDecompress: the data inflates past the room given");
    return NULL;
  }
  if (r != LIBDEFLATE_SUCCESS) {
    napi_throw_error(env, "Z_DATA_ERROR", "zlibDecompress: invalid zlib data");
    return NULL;
  }
  napi_value n;
  if (napi_create_double(env, (double)out, &n) != napi_ok) return NULL;
  return n;
}

napi_status deflate_register(napi_env env, napi_value exports) {
  napi_status st = block_register(env, exports, "zlibCompress", js_zlib_compress, "libdeflateVersion", LIBDEFLATE_VERSION_STRING);
  if (st != napi_ok) return st;
  napi_property_descriptor props[] = {{"zlibDecompress", NULL, js_zlib_decompress, NULL, NULL, NULL, napi_enumerable, NULL}};
  return napi_define_properties(env, exports, 1, props);
}

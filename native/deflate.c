/*
 * gzip blocks for images: zlib-wrapped DEFLATE (RFC 1950) by the vendored libdeflate
 * (native/vendor/libdeflate, version pinned there), part of the strata_native addon.
 *
 *   zlibCompress(src: Uint8Array, level: 0..12) -> Buffer      one whole block, synchronous
 *   libdeflateVersion: string                                  e.g. "1.14"
 *
 * Why not node:zlib: Node bundles Chromium's zlib fork, whose output follows the Node version
 * and possibly the CPU's SIMD support, is 2 % larger than the zlib mksquashfs uses, and is
 * half libdeflate's speed at the same level (spec/decisions.md, Images). libdeflate compresses
 * a whole buffer at once, which is exactly a SquashFS or EROFS block.
 *
 * Each thread that loads the addon (the main thread, every worker) keeps its own compressor
 * per level and one output buffer, freed when that thread's environment goes away.
 */
#include <node_api.h>
#include <stdlib.h>

#include "vendor/libdeflate/libdeflate.h"
#include "compressors.h"
#include "instance.h"

#define LEVELS 13 /* libdeflate's levels 0 (stored) to 12 */

typedef struct {
  struct libdeflate_compressor *compressors[LEVELS];
  void *out;
  size_t out_size;
} deflate_state;

static void *state_new(void) { return calloc(1, sizeof(deflate_state)); }

static void state_free(void *data) {
  deflate_state *s = data;
  for (int i = 0; i < LEVELS; i++) libdeflate_free_compressor(s->compressors[i]);
  free(s->out);
  free(s);
}

static napi_value js_zlib_compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  int32_t level = -1;
  if (argc < 2 || napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "zlibCompress: src must be a Uint8Array");
    return NULL;
  }
  if (napi_get_value_int32(env, argv[1], &level) != napi_ok || level < 0 || level >= LEVELS) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "zlibCompress: level must be 0 to 12");
    return NULL;
  }
  deflate_state *s = instance_slot(env, SLOT_DEFLATE, state_new, state_free);
  if (s != NULL && s->compressors[level] == NULL) s->compressors[level] = libdeflate_alloc_compressor(level);
  if (s == NULL || s->compressors[level] == NULL) {
    napi_throw_error(env, "ENOMEM", "zlibCompress: out of memory");
    return NULL;
  }
  struct libdeflate_compressor *c = s->compressors[level];
  /* The bound always fits, so the result is the same as with any larger buffer. */
  size_t bound = libdeflate_zlib_compress_bound(c, length);
  if (s->out_size < bound) {
    void *grown = realloc(s->out, bound);
    if (grown == NULL) {
      napi_throw_error(env, "ENOMEM", "zlibCompress: out of memory");
      return NULL;
    }
    s->out = grown;
    s->out_size = bound;
  }
  size_t n = libdeflate_zlib_compress(c, data, length, s->out, s->out_size);
  napi_value result;
  if (n == 0 || napi_create_buffer_copy(env, n, s->out, NULL, &result) != napi_ok) {
    napi_throw_error(env, "ERR_STRATA_NATIVE", "zlibCompress: compression failed");
    return NULL;
  }
  return result;
}

napi_status deflate_register(napi_env env, napi_value exports) {
  napi_value version;
  napi_status st = napi_create_string_utf8(env, LIBDEFLATE_VERSION_STRING, NAPI_AUTO_LENGTH, &version);
  if (st != napi_ok) return st;
  napi_property_descriptor props[] = {
      {"zlibCompress", NULL, js_zlib_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"libdeflateVersion", NULL, NULL, NULL, NULL, version, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

/*
 * LZ4 blocks for images: the raw LZ4 block format (no frame) from the vendored liblz4
 * (native/vendor/lz4, version pinned there), part of the strata_native addon.
 *
 *   lz4Compress(src: Uint8Array) -> Buffer      one whole block, synchronous, exact size
 *   lz4Version: string                          e.g. "1.9.4-m16" (see below)
 *
 * LZ4_compress_fast at acceleration 1 (LZ4_compress_default's parse), with the match table
 * built at LZ4_MEMORY_USAGE 16 (binding.gyp): 64 KiB instead of liblz4's default 16 KiB,
 * 2-3 % smaller output on the bench's tars for about a fifth more time. The bytes depend on
 * the liblz4 version, that setting, the word size and the byte order (liblz4 hashes 5 bytes
 * on 64-bit machines and 4 on 32-bit ones, each way round by byte order), so the version
 * string names the setting, and the machine class unless it is 64-bit little-endian
 * (x86-64, arm64): the cache key names the version (spec/decisions.md, Images).
 *
 * Each thread that loads the addon keeps its own match table and output buffer
 * (native/instance.h), freed when that thread's environment goes away.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vendor/lz4/lz4.h"
#include "instance.h"
#include "compressors.h"

#if LZ4_MEMORY_USAGE != 16
#error "strata's lz4 bytes are pinned at LZ4_MEMORY_USAGE 16 (binding.gyp)"
#endif

typedef struct {
  void *table; /* LZ4_sizeofState() bytes */
  block_out out;
} lz4_state;

static void *state_new(void) {
  lz4_state *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->table = malloc((size_t)LZ4_sizeofState());
  if (s->table == NULL) {
    free(s);
    return NULL;
  }
  return s;
}

static void state_free(void *data) {
  lz4_state *s = data;
  free(s->table);
  free(s->out.buf);
  free(s);
}

static napi_value js_lz4_compress(napi_env env, napi_callback_info info) {
  static const char fn[] = "lz4Compress";
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  const void *data;
  size_t length;
  if (!block_source(env, argv[0], fn, &data, &length)) return NULL;
  if (length > LZ4_MAX_INPUT_SIZE) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "lz4Compress: src is larger than LZ4_MAX_INPUT_SIZE");
    return NULL;
  }
  lz4_state *s = instance_slot(env, SLOT_LZ4, state_new, state_free);
  if (s == NULL) {
    napi_throw_error(env, "ENOMEM", "lz4Compress: out of memory");
    return NULL;
  }
  /* The bound always fits, so the result is the same as with any larger buffer. */
  int bound = LZ4_compressBound((int)length);
  char *out = block_scratch(env, &s->out, (size_t)bound, fn);
  if (out == NULL) return NULL;
  int n = LZ4_compress_fast_extState(s->table, data, out, (int)length, bound, 1);
  return block_result(env, &s->out, n > 0 ? (size_t)n : 0, fn);
}

/* "" on 64-bit little-endian machines, else the class whose liblz4 output differs from theirs. */
static const char *machine_tag(void) {
  const union {
    uint32_t u;
    uint8_t c[4];
  } one = {1};
  int little = one.c[0] == 1;
  if (sizeof(size_t) == 8) return little ? "" : "-64be";
  return little ? "-32le" : "-32be";
}

napi_status lz4_register(napi_env env, napi_value exports) {
  char text[48];
  snprintf(text, sizeof text, "%s-m%d%s", LZ4_versionString(), LZ4_MEMORY_USAGE, machine_tag());
  return block_register(env, exports, "lz4Compress", js_lz4_compress, "lz4Version", text);
}

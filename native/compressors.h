/*
 * The addon's image block compressors, each from a vendored library (native/vendor), and what
 * they share (native/compressors.c): a whole block in, an exact-size Buffer of its own out,
 * through one output buffer per thread (kept in the compressor's instance slot).
 */
#ifndef STRATA_COMPRESSORS_H
#define STRATA_COMPRESSORS_H
#include <node_api.h>
#include <stdbool.h>

/* native/deflate.c: adds zlibCompress and libdeflateVersion to `exports`. */
napi_status deflate_register(napi_env env, napi_value exports);

/* native/lz4.c: adds lz4Compress and lz4Version to `exports`. */
napi_status lz4_register(napi_env env, napi_value exports);

/* A compressor's output buffer, grown as blocks need, freed with its thread's state. */
typedef struct {
  void *buf;
  size_t size;
} block_out;

/* The bytes of `v` when it is a Uint8Array; else throws a TypeError naming `fn`, false. */
bool block_source(napi_env env, napi_value v, const char *fn, const void **data, size_t *length);

/* `out`'s buffer with room for `need` bytes (the compressor's bound); NULL after throwing ENOMEM. */
void *block_scratch(napi_env env, block_out *out, size_t need, const char *fn);

/* The first `n` bytes of `out` as a Buffer of their own (n = 0 is a failed compression: throws, NULL). */
napi_value block_result(napi_env env, const block_out *out, size_t n, const char *fn);

/* Adds the compressor `fn` as `fn_name` and its library's version string `version` as `version_name`. */
napi_status block_register(napi_env env, napi_value exports, const char *fn_name, napi_callback fn, const char *version_name, const char *version);

#endif

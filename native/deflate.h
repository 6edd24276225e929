/* native/deflate.c: the addon's gzip block compressor (vendored libdeflate). */
#ifndef STRATA_DEFLATE_H
#define STRATA_DEFLATE_H
#include <node_api.h>

/* Adds zlibCompress and libdeflateVersion to `exports`. */
napi_status deflate_register(napi_env env, napi_value exports);

#endif

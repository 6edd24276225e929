/* The addon's image block compressors, each from a vendored library (native/vendor). */
#ifndef STRATA_COMPRESSORS_H
#define STRATA_COMPRESSORS_H
#include <node_api.h>

/* native/deflate.c: adds zlibCompress and libdeflateVersion to `exports`. */
napi_status deflate_register(napi_env env, napi_value exports);

/* native/lz4.c: adds lz4Compress and lz4Version to `exports`. */
napi_status lz4_register(napi_env env, napi_value exports);

#endif

/* What the addon's block compressors share (native/compressors.h). */
#include <stdio.h>
#include <stdlib.h>

#include "compressors.h"

static void fail(napi_env env, const char *code, const char *fn, const char *what) {
  char msg[96];
  snprintf(msg, sizeof msg, "%s: %s", fn, what);
  napi_throw_error(env, code, msg);
}

bool block_source(napi_env env, napi_value v, const char *fn, const void **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *d = NULL;
  if (v == NULL || napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, v, &type, length, &d, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: src must be a Uint8Array", fn);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *data = d;
  return true;
}

void *block_scratch(napi_env env, block_out *out, size_t need, const char *fn) {
  if (out->size < need) {
    void *grown = realloc(out->buf, need);
    if (grown == NULL) {
      fail(env, "ENOMEM", fn, "out of memory");
      return NULL;
    }
    out->buf = grown;
    out->size = need;
  }
  return out->buf;
}

napi_value block_result(napi_env env, const block_out *out, size_t n, const char *fn) {
  napi_value result;
  if (n == 0 || napi_create_buffer_copy(env, n, out->buf, NULL, &result) != napi_ok) {
    fail(env, "ERR_STRATA_NATIVE", fn, "compression failed");
    return NULL;
  }
  return result;
}

napi_status block_register(napi_env env, napi_value exports, const char *fn_name, napi_callback fn, const char *version_name, const char *version) {
  napi_value v;
  napi_status st = napi_create_string_utf8(env, version, NAPI_AUTO_LENGTH, &v);
  if (st != napi_ok) return st;
  napi_property_descriptor props[] = {
      {fn_name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL},
      {version_name, NULL, NULL, NULL, NULL, v, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

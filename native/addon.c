/*
 * strata_native: the few system calls Node does not expose, all synchronous.
 *
 * Exports (every path argument is a string, UTF-8, or a Buffer of raw bytes):
 *   lgetxattr(path, name)          -> Buffer | undefined   (undefined on ENODATA)
 *   lsetxattr(path, name, value, flags?)                   value: any Uint8Array
 *   llistxattr(path)               -> string[]            (kernel order)
 *   lremovexattr(path, name)
 *   mknod(path, mode, major, minor)                       mode carries S_IFCHR/S_IFBLK/S_IFIFO
 *   getpwnam(name) -> number | undefined                  through NSS (files, LDAP, sssd ...)
 *   getgrnam(name) -> number | undefined
 *
 * None of them follows a symlink in the last path component: the l*xattr family acts on
 * the link itself, and mknod never follows (it fails with EEXIST on any existing name).
 * Failures throw an Error shaped like Node's fs errors: message "CODE: description,
 * syscall 'path'", and properties code ('EPERM', 'ENOTSUP', 'ENODATA' ...), errno
 * (negative, as libuv reports it), syscall and path.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CHECK(call)                                                                      \
  do {                                                                                   \
    if ((call) != napi_ok) {                                                             \
      throw_pending(env, #call);                                                         \
      return NULL;                                                                       \
    }                                                                                    \
  } while (0)

static void throw_pending(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_STRATA_NATIVE", what);
}

/*
 * Node's names for errno values. glibc aliases (EOPNOTSUPP, EWOULDBLOCK, EDEADLOCK) come
 * after the names Node uses, so the first match wins. Anything not listed falls back to
 * glibc's strerrorname_np (2.32+), kept optional so older HPC distributions still build.
 */
#define E(x) {x, #x},
static const struct {
  int err;
  const char *name;
} ERRNO_NAMES[] = {
    E(ENOTSUP) E(EAGAIN) E(EDEADLK) E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO)
    E(E2BIG) E(EBADF) E(ECHILD) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV)
    E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ETXTBSY) E(EFBIG)
    E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS) E(ENOTEMPTY)
    E(ELOOP) E(ENODATA) E(EOVERFLOW) E(EILSEQ) E(EDQUOT) E(ESTALE) E(EOPNOTSUPP)
    E(EWOULDBLOCK)
};
#undef E

static const char *errno_code(int err) {
  for (size_t i = 0; i < sizeof ERRNO_NAMES / sizeof ERRNO_NAMES[0]; i++)
    if (ERRNO_NAMES[i].err == err) return ERRNO_NAMES[i].name;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) return name;
#endif
  return "EUNKNOWN";
}

static void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  const char *code = errno_code(err);
  char desc[256];
  snprintf(desc, sizeof desc, "%s", strerror(err));
  if (desc[0] >= 'A' && desc[0] <= 'Z' && !(desc[1] >= 'A' && desc[1] <= 'Z')) desc[0] += 'a' - 'A';
  size_t len = strlen(code) + strlen(desc) + strlen(syscall) + strlen(path) + 16;
  char *msg = malloc(len);
  if (msg == NULL) {
    napi_throw_error(env, code, desc);
    return;
  }
  snprintf(msg, len, "%s: %s, %s '%s'", code, desc, syscall, path);
  napi_value js_code, js_msg, error, v;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &js_code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &js_msg) != napi_ok ||
      napi_create_error(env, js_code, js_msg, &error) != napi_ok) {
    free(msg);
    throw_pending(env, "cannot create error");
    return;
  }
  free(msg);
  napi_set_named_property(env, error, "code", js_code);
  if (napi_create_int32(env, -err, &v) == napi_ok) napi_set_named_property(env, error, "errno", v);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "syscall", v);
  if (napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "path", v);
  napi_throw(env, error);
}

/*
 * Copies a string or Buffer argument into a fresh NUL-terminated C string; NULL (with a
 * pending TypeError) when it is neither or contains a NUL byte. Caller frees.
 */
static char *get_cstring(napi_env env, napi_value value, const char *what) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return NULL;
  char *out = NULL;
  size_t len = 0;
  if (type == napi_string) {
    if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) return NULL;
    out = malloc(len + 1);
    if (out == NULL) return NULL;
    if (napi_get_value_string_utf8(env, value, out, len + 1, &len) != napi_ok) {
      free(out);
      return NULL;
    }
  } else {
    bool is_buffer = false;
    void *data = NULL;
    napi_is_buffer(env, value, &is_buffer);
    if (!is_buffer || napi_get_buffer_info(env, value, &data, &len) != napi_ok) {
      char msg[96];
      snprintf(msg, sizeof msg, "%s must be a string or a Buffer", what);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
      return NULL;
    }
    out = malloc(len + 1);
    if (out == NULL) return NULL;
    memcpy(out, data, len);
    out[len] = '\0';
  }
  if (strlen(out) != len) {
    free(out);
    char msg[96];
    snprintf(msg, sizeof msg, "%s must not contain NUL bytes", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return NULL;
  }
  return out;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return false;
  }
  return true;
}

static bool get_u32(napi_env env, napi_value value, const char *what, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0 && d <= 4294967295.0) ||
      d != (double)(uint32_t)d) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be an integer in 0..2^32-1", what);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  if (!get_args(env, info, 2, argv)) return NULL;
  char *path = get_cstring(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  char *buf = NULL;
  ssize_t n;
  /* Size, then value; another process may grow the value in between (ERANGE): ask again. */
  for (;;) {
    n = lgetxattr(path, name, NULL, 0);
    if (n < 0) break;
    char *nbuf = realloc(buf, n > 0 ? (size_t)n : 1);
    if (nbuf == NULL) {
      n = -1;
      errno = ENOMEM;
      break;
    }
    buf = nbuf;
    n = lgetxattr(path, name, buf, (size_t)n);
    if (n >= 0 || errno != ERANGE) break;
  }
  if (n < 0) {
    int err = errno;
    free(buf);
    free(name);
    if (err == ENODATA) {
      free(path);
      napi_get_undefined(env, &result);
      return result;
    }
    throw_errno(env, err, "lgetxattr", path);
    free(path);
    return NULL;
  }
  napi_status st = napi_create_buffer_copy(env, (size_t)n, n > 0 ? buf : "", NULL, &result);
  free(buf);
  free(name);
  free(path);
  CHECK(st);
  return result;
}

static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "lsetxattr(path, name, value[, flags])");
    return NULL;
  }
  uint32_t flags = 0;
  if (argc >= 4) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[3], &t));
    if (t != napi_undefined && !get_u32(env, argv[3], "flags", &flags)) return NULL;
  }
  bool is_ta = false;
  CHECK(napi_is_typedarray(env, argv[2], &is_ta));
  void *data = NULL;
  size_t len = 0;
  if (is_ta) {
    napi_typedarray_type tt;
    size_t count, offset;
    napi_value ab;
    CHECK(napi_get_typedarray_info(env, argv[2], &tt, &count, &data, &ab, &offset));
    if (tt != napi_uint8_array && tt != napi_uint8_clamped_array && tt != napi_int8_array) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "value must be a Uint8Array");
      return NULL;
    }
    len = count;
  } else {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "value must be a Uint8Array");
    return NULL;
  }
  char *path = get_cstring(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  int rc = lsetxattr(path, name, len > 0 ? data : "", len, (int)flags);
  int err = errno;
  free(name);
  if (rc != 0) throw_errno(env, err, "lsetxattr", path);
  free(path);
  return NULL;
}

static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  if (!get_args(env, info, 1, argv)) return NULL;
  char *path = get_cstring(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *buf = NULL;
  ssize_t n;
  for (;;) {
    n = llistxattr(path, NULL, 0);
    if (n <= 0) break;
    char *nbuf = realloc(buf, (size_t)n);
    if (nbuf == NULL) {
      n = -1;
      errno = ENOMEM;
      break;
    }
    buf = nbuf;
    n = llistxattr(path, buf, (size_t)n);
    if (n >= 0 || errno != ERANGE) break;
  }
  if (n < 0) {
    throw_errno(env, errno, "llistxattr", path);
    free(buf);
    free(path);
    return NULL;
  }
  free(path);
  if (napi_create_array(env, &result) != napi_ok) {
    free(buf);
    throw_pending(env, "napi_create_array");
    return NULL;
  }
  uint32_t idx = 0;
  for (ssize_t off = 0; off < n;) {
    size_t l = strnlen(buf + off, (size_t)(n - off));
    if (l > 0) {
      napi_value s;
      if (napi_create_string_utf8(env, buf + off, l, &s) != napi_ok ||
          napi_set_element(env, result, idx++, s) != napi_ok) {
        free(buf);
        throw_pending(env, "llistxattr result");
        return NULL;
      }
    }
    off += (ssize_t)l + 1;
  }
  free(buf);
  return result;
}

static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char *path = get_cstring(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  int rc = lremovexattr(path, name);
  int err = errno;
  free(name);
  if (rc != 0) throw_errno(env, err, "lremovexattr", path);
  free(path);
  return NULL;
}

static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint32_t mode, major, minor;
  if (!get_u32(env, argv[1], "mode", &mode) || !get_u32(env, argv[2], "major", &major) ||
      !get_u32(env, argv[3], "minor", &minor))
    return NULL;
  char *path = get_cstring(env, argv[0], "path");
  if (path == NULL) return NULL;
  int rc = mknod(path, (mode_t)mode, makedev(major, minor));
  if (rc != 0) throw_errno(env, errno, "mknod", path);
  free(path);
  return NULL;
}

/* getpwnam_r / getgrnam_r with a growing buffer; undefined when the name is unknown. */
static napi_value lookup_id(napi_env env, napi_callback_info info, bool group) {
  napi_value argv[1], result;
  if (!get_args(env, info, 1, argv)) return NULL;
  char *name = get_cstring(env, argv[0], "name");
  if (name == NULL) return NULL;
  size_t size = 1024;
  char *buf = NULL;
  int rc;
  bool found = false;
  uint32_t id = 0;
  for (;;) {
    char *nbuf = realloc(buf, size);
    if (nbuf == NULL) {
      rc = ENOMEM;
      break;
    }
    buf = nbuf;
    if (group) {
      struct group gr, *res = NULL;
      rc = getgrnam_r(name, &gr, buf, size, &res);
      if (rc == 0 && res != NULL) found = true, id = (uint32_t)res->gr_gid;
    } else {
      struct passwd pw, *res = NULL;
      rc = getpwnam_r(name, &pw, buf, size, &res);
      if (rc == 0 && res != NULL) found = true, id = (uint32_t)res->pw_uid;
    }
    if (rc != ERANGE || size >= (1u << 24)) break;
    size *= 2;
  }
  free(buf);
  /* ENOENT/ESRCH/EBADF/EPERM are how some NSS modules say "no such name". */
  if (rc != 0 && rc != ENOENT && rc != ESRCH && rc != EBADF && rc != EPERM) {
    throw_errno(env, rc, group ? "getgrnam_r" : "getpwnam_r", name);
    free(name);
    return NULL;
  }
  free(name);
  if (found) {
    CHECK(napi_create_uint32(env, id, &result));
  } else {
    CHECK(napi_get_undefined(env, &result));
  }
  return result;
}

static napi_value js_getpwnam(napi_env env, napi_callback_info info) {
  return lookup_id(env, info, false);
}

static napi_value js_getgrnam(napi_env env, napi_callback_info info) {
  return lookup_id(env, info, true);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getpwnam", NULL, js_getpwnam, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getgrnam", NULL, js_getgrnam, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

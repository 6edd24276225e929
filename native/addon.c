/*
 * strata_native: the few system calls Node does not expose, all synchronous but startWriteback
 * (on libuv's pool); the layer extraction (native/extract.c) and the image block compressors
 * (deflate.c, lz4.c) are registered here too.
 *
 * Exports (every path argument is a string, UTF-8, or a Buffer of raw bytes):
 *   lgetxattr(path, name)          -> Buffer | undefined   (undefined on ENODATA)
 *   lsetxattr(path, name, value, flags?)                   value: any Uint8Array
 *   llistxattr(path)               -> string[]            (kernel order)
 *   lremovexattr(path, name)
 *   getpwnam(name) -> number | undefined                  through NSS (files, LDAP, sssd ...)
 *   getgrnam(name) -> number | undefined
 *
 * Descriptor-relative calls, for writing a tree no other process can redirect (each takes a
 * directory fd, or AT_FDCWD = -100, and a name or path relative to it; fds are plain ints that
 * Node's fs.*Sync(fd) calls accept):
 *   openat(dirfd, path, flags, mode) -> fd                 exactly openat(2); add O_NOFOLLOW
 *   openBeneath(dirfd, path, flags, mode) -> fd            openat2(2) with RESOLVE_BENEATH |
 *        RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: no component may be a
 *        symlink, `..` may not climb above dirfd, no mount is crossed (ELOOP, EXDEV otherwise).
 *        Kernels before 5.6 (ENOSYS): the same rule walked by hand, one openat(O_NOFOLLOW |
 *        O_DIRECTORY) per component, `.`/`..`/empty components refused with EINVAL.
 *   mkdirat(dirfd, name, mode)   mknodat(dirfd, name, mode, major, minor)
 *   symlinkat(target, dirfd, name)   linkat(olddirfd, oldname, newdirfd, newname)  (no follow)
 *   renameat2(olddirfd, oldname, newdirfd, newname, flags)  RENAME_NOREPLACE 1, RENAME_EXCHANGE 2
 *   unlinkat(dirfd, name, flags)                           AT_REMOVEDIR 0x200
 *   fchownat(dirfd, name, uid, gid, flags)                 uid/gid -1: leave; AT_SYMLINK_NOFOLLOW 0x100,
 *   fchmodat(dirfd, name, mode, flags)                     AT_EMPTY_PATH 0x1000 with name '' acts on dirfd
 *   utimensat(dirfd, name, seconds, flags)                 atime = mtime = seconds (nanoseconds 0)
 *   fstatat(dirfd, name, flags) -> { dev, ino, mode, uid, gid, nlink }
 *   fsetxattr(fd, name, value, flags?)   fremovexattr(fd, name)
 *   readdirfd(fd) -> Buffer[]                              names (raw bytes) but . and .., any order
 *   alignedBuffer(size) -> Buffer                          uninitialised, its first byte at a multiple
 *        of 4096 (O_DIRECT writes); freed when collected
 *   rmtreeat(dirfd, name)                                  removes name and everything below it:
 *        never follows a symlink, never crosses into another filesystem (EXDEV), re-checks
 *        each directory it opened is the one it inspected, and gives the caller's own
 *        directories u+rwx when their mode keeps it out. A missing name is not an error.
 *
 * And, from native/deflate.c: zlibCompress(src, level) -> Buffer, libdeflateVersion; from
 * native/lz4.c: lz4Compress(src) -> Buffer, lz4Version; from native/extract.c: extractAvailable,
 * extractOpen, extractRun, extractClose; from native/sha256.c: hashOpen, hashUpdate, hashDigest,
 * hashCopy, sha256Into; from native/readahead.c: readAheadOpen, readAheadTake, readAheadSeek,
 * readAheadClose.
 *
 * None of them follows a symlink in the last path component: the l*xattr family acts on
 * the link itself.
 * Failures throw an Error shaped like Node's fs errors: message "CODE: description,
 * syscall 'path'", and properties code ('EPERM', 'ENOTSUP', 'ENODATA' ...), errno
 * (negative, as libuv reports it), syscall and path.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "compressors.h"
#include "native.h"

#define CHECK(call)                                                                      \
  do {                                                                                   \
    if ((call) != napi_ok) {                                                             \
      throw_pending(env, #call);                                                         \
      return NULL;                                                                       \
    }                                                                                    \
  } while (0)

void throw_pending(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_STRATA_NATIVE", what);
}

/*
 * Queues `data`'s work on libuv's pool and returns the promise `done` settles; NULL with a
 * pending exception when it could not (the caller still owns `data` then).
 */
napi_value queue_job(napi_env env, const char *what, napi_async_execute_callback execute, napi_async_complete_callback done, void *data,
                            napi_async_work *work, napi_deferred *deferred) {
  napi_value promise, name;
  if (napi_create_promise(env, deferred, &promise) != napi_ok || napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, done, data, work) != napi_ok) {
    throw_pending(env, "napi_create_async_work");
    return NULL;
  }
  if (napi_queue_async_work(env, *work) != napi_ok) {
    napi_delete_async_work(env, *work);
    throw_pending(env, "napi_queue_async_work");
    return NULL;
  }
  return promise;
}

napi_value tagged_external(napi_env env, void *data, napi_finalize finalize, const napi_type_tag *tag) {
  napi_value v;
  if (napi_create_external(env, data, NULL, NULL, &v) != napi_ok || napi_type_tag_object(env, v, tag) != napi_ok ||
      napi_add_finalizer(env, v, data, finalize, NULL, NULL) != napi_ok) {
    throw_pending(env, "napi_create_external");
    return NULL;
  }
  return v;
}

void *tagged_external_data(napi_env env, napi_value v, const napi_type_tag *tag, const char *usage) {
  napi_valuetype t;
  bool tagged = false;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, v, tag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
    return NULL;
  }
  return data;
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

void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
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

bool get_offset(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) return false;
  *out = (int64_t)d;
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

/* A file descriptor or AT_FDCWD. */
static bool get_fd(napi_env env, napi_value value, const char *what, int *out) {
  int32_t v;
  if (napi_get_value_int32(env, value, &v) != napi_ok || (v < 0 && v != AT_FDCWD)) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a file descriptor", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *out = v;
  return true;
}

/* An owner id, or -1 for "leave it". */
static bool get_id(napi_env env, napi_value value, const char *what, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) == napi_ok && d == -1) {
    *out = (uint32_t)-1;
    return true;
  }
  return get_u32(env, value, what, out);
}

static napi_value fd_value(napi_env env, int fd) {
  napi_value v;
  if (napi_create_int32(env, fd, &v) != napi_ok) {
    close(fd);
    throw_pending(env, "napi_create_int32");
    return NULL;
  }
  return v;
}

/* openat(2) exactly, O_CLOEXEC added: the new descriptor, or -1 with errno set. */
static int openat_fd(int dirfd, const char *path, int flags, mode_t mode) {
  return openat(dirfd, path, flags | O_CLOEXEC, mode);
}

/* The JS side of an open call (dirfd, path, flags, mode) -> fd; failures throw, naming `syscall`. */
static napi_value open_call(napi_env env, napi_callback_info info, int (*open_fn)(int, const char *, int, mode_t), const char *syscall_name) {
  napi_value argv[4];
  int dirfd;
  uint32_t flags, mode;
  if (!get_args(env, info, 4, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "flags", &flags) ||
      !get_u32(env, argv[3], "mode", &mode))
    return NULL;
  char *path = get_cstring(env, argv[1], "path");
  if (path == NULL) return NULL;
  int fd = open_fn(dirfd, path, (int)flags, (mode_t)mode);
  if (fd < 0) {
    throw_errno(env, errno, syscall_name, path);
    free(path);
    return NULL;
  }
  free(path);
  return fd_value(env, fd);
}

static napi_value js_openat(napi_env env, napi_callback_info info) {
  return open_call(env, info, openat_fd, "openat");
}

/* The openat2 rule walked by hand: every component a real directory, the last opened with flags. */
static int open_beneath_walk(int dirfd, const char *path, int flags, mode_t mode) {
  char *copy = strdup(path);
  if (copy == NULL) return -1;
  int cur = dirfd;
  char *save = NULL, *part = strtok_r(copy, "/", &save);
  int fd = -1;
  if (part == NULL || path[0] == '/') errno = EINVAL;
  while (part != NULL && path[0] != '/') {
    char *next = strtok_r(NULL, "/", &save);
    if (strcmp(part, ".") == 0 || strcmp(part, "..") == 0) {
      errno = EINVAL;
      break;
    }
    if (next == NULL) {
      fd = openat(cur, part, flags | O_NOFOLLOW | O_CLOEXEC, mode);
      break;
    }
    int sub = openat(cur, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cur != dirfd) close(cur);
    cur = sub;
    if (sub < 0) break;
    part = next;
  }
  int err = errno;
  if (cur != dirfd && cur >= 0) close(cur);
  free(copy);
  errno = err;
  return fd;
}

/* openat2 is probed once: a kernel without it (ENOSYS) gets the walk from then on. Several
 * threads may read it (native/extract.c runs on libuv's pool); it only ever goes 1 -> 0. */
static int have_openat2 = 1;

/* openBeneath's rule for one path: the new descriptor, or -1 with errno set. Thread-safe. */
int open_beneath_fd(int dirfd, const char *path, int flags, mode_t mode) {
  int fd = -1;
  if (__atomic_load_n(&have_openat2, __ATOMIC_RELAXED)) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)flags | O_NOFOLLOW | O_CLOEXEC;
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    do fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (fd < 0 && errno == EAGAIN);
    if (fd >= 0 || errno != ENOSYS) return fd;
    __atomic_store_n(&have_openat2, 0, __ATOMIC_RELAXED);
  }
  return open_beneath_walk(dirfd, path, flags, mode);
}

static napi_value js_open_beneath(napi_env env, napi_callback_info info) {
  return open_call(env, info, open_beneath_fd, "openat2");
}

static napi_value js_mkdirat(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int dirfd;
  uint32_t mode;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "mode", &mode)) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (mkdirat(dirfd, name, (mode_t)mode) != 0) throw_errno(env, errno, "mkdirat", name);
  free(name);
  return NULL;
}

static napi_value js_mknodat(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int dirfd;
  uint32_t mode, major, minor;
  if (!get_args(env, info, 5, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "mode", &mode) ||
      !get_u32(env, argv[3], "major", &major) || !get_u32(env, argv[4], "minor", &minor))
    return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (mknodat(dirfd, name, (mode_t)mode, makedev(major, minor)) != 0) throw_errno(env, errno, "mknodat", name);
  free(name);
  return NULL;
}

static napi_value js_symlinkat(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int dirfd;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[1], "dirfd", &dirfd)) return NULL;
  char *target = get_cstring(env, argv[0], "target");
  if (target == NULL) return NULL;
  char *name = get_cstring(env, argv[2], "name");
  if (name == NULL) {
    free(target);
    return NULL;
  }
  if (symlinkat(target, dirfd, name) != 0) throw_errno(env, errno, "symlinkat", name);
  free(target);
  free(name);
  return NULL;
}

/* Two (dirfd, name) pairs, then `extra` unsigned flags. */
static bool get_pair_args(napi_env env, napi_callback_info info, size_t argc, napi_value *argv, int *fd1, char **n1, int *fd2, char **n2) {
  *n1 = *n2 = NULL;
  if (!get_args(env, info, argc, argv) || !get_fd(env, argv[0], "olddirfd", fd1) || !get_fd(env, argv[2], "newdirfd", fd2)) return false;
  *n1 = get_cstring(env, argv[1], "oldname");
  if (*n1 == NULL) return false;
  *n2 = get_cstring(env, argv[3], "newname");
  if (*n2 == NULL) {
    free(*n1);
    *n1 = NULL;
    return false;
  }
  return true;
}

static napi_value js_linkat(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd1, fd2;
  char *n1, *n2;
  if (!get_pair_args(env, info, 4, argv, &fd1, &n1, &fd2, &n2)) return NULL;
  if (linkat(fd1, n1, fd2, n2, 0) != 0) throw_errno(env, errno, "linkat", n2);
  free(n1);
  free(n2);
  return NULL;
}

static napi_value js_renameat2(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd1, fd2;
  char *n1, *n2;
  uint32_t flags;
  if (!get_pair_args(env, info, 5, argv, &fd1, &n1, &fd2, &n2)) return NULL;
  if (get_u32(env, argv[4], "flags", &flags)) {
    if (syscall(SYS_renameat2, fd1, n1, fd2, n2, flags) != 0) throw_errno(env, errno, "renameat2", n1);
  }
  free(n1);
  free(n2);
  return NULL;
}

static napi_value js_unlinkat(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int dirfd;
  uint32_t flags;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "flags", &flags)) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (unlinkat(dirfd, name, (int)flags) != 0) throw_errno(env, errno, "unlinkat", name);
  free(name);
  return NULL;
}

static napi_value js_fchownat(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int dirfd;
  uint32_t uid, gid, flags;
  if (!get_args(env, info, 5, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_id(env, argv[2], "uid", &uid) ||
      !get_id(env, argv[3], "gid", &gid) || !get_u32(env, argv[4], "flags", &flags))
    return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (fchownat(dirfd, name, (uid_t)uid, (gid_t)gid, (int)flags) != 0) throw_errno(env, errno, "fchownat", name);
  free(name);
  return NULL;
}

static napi_value js_fchmodat(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int dirfd;
  uint32_t mode, flags;
  if (!get_args(env, info, 4, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "mode", &mode) ||
      !get_u32(env, argv[3], "flags", &flags))
    return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (fchmodat(dirfd, name, (mode_t)mode, (int)flags) != 0) throw_errno(env, errno, "fchmodat", name);
  free(name);
  return NULL;
}

static napi_value js_utimensat(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int dirfd;
  uint32_t flags;
  int64_t sec;
  if (!get_args(env, info, 4, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[3], "flags", &flags)) return NULL;
  if (napi_get_value_int64(env, argv[2], &sec) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "seconds must be a number");
    return NULL;
  }
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  struct timespec ts[2] = {{(time_t)sec, 0}, {(time_t)sec, 0}};
  if (utimensat(dirfd, name, ts, (int)flags) != 0) throw_errno(env, errno, "utimensat", name);
  free(name);
  return NULL;
}

static bool set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  return napi_create_double(env, v, &n) == napi_ok && napi_set_named_property(env, obj, key, n) == napi_ok;
}

static napi_value js_fstatat(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  int dirfd;
  uint32_t flags;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], "dirfd", &dirfd) || !get_u32(env, argv[2], "flags", &flags)) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  struct stat st;
  if (fstatat(dirfd, name, &st, (int)flags) != 0) {
    throw_errno(env, errno, "fstatat", name);
    free(name);
    return NULL;
  }
  free(name);
  CHECK(napi_create_object(env, &result));
  if (!set_num(env, result, "dev", (double)st.st_dev) || !set_num(env, result, "ino", (double)st.st_ino) ||
      !set_num(env, result, "mode", (double)st.st_mode) || !set_num(env, result, "uid", (double)st.st_uid) ||
      !set_num(env, result, "gid", (double)st.st_gid) || !set_num(env, result, "nlink", (double)st.st_nlink)) {
    throw_pending(env, "fstatat result");
    return NULL;
  }
  return result;
}

static napi_value js_fsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint32_t flags = 0;
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "fsetxattr(fd, name, value[, flags])");
    return NULL;
  }
  if (!get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (argc >= 4) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[3], &t));
    if (t != napi_undefined && !get_u32(env, argv[3], "flags", &flags)) return NULL;
  }
  bool is_ta = false;
  CHECK(napi_is_typedarray(env, argv[2], &is_ta));
  void *data = NULL;
  size_t len = 0;
  napi_typedarray_type tt = napi_int16_array;
  if (is_ta) {
    size_t offset;
    napi_value ab;
    CHECK(napi_get_typedarray_info(env, argv[2], &tt, &len, &data, &ab, &offset));
  }
  if (!is_ta || (tt != napi_uint8_array && tt != napi_uint8_clamped_array && tt != napi_int8_array)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "value must be a Uint8Array");
    return NULL;
  }
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (fsetxattr(fd, name, len > 0 ? data : "", len, (int)flags) != 0) throw_errno(env, errno, "fsetxattr", name);
  free(name);
  return NULL;
}

static napi_value js_fremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "fd", &fd)) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  if (fremovexattr(fd, name) != 0) throw_errno(env, errno, "fremovexattr", name);
  free(name);
  return NULL;
}

static napi_value js_readdirfd(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int fd;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], "fd", &fd)) return NULL;
  int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
  if (d == NULL) {
    int err = errno;
    if (dup_fd >= 0) close(dup_fd);
    throw_errno(env, err, "readdir", ".");
    return NULL;
  }
  if (napi_create_array(env, &result) != napi_ok) {
    closedir(d);
    throw_pending(env, "napi_create_array");
    return NULL;
  }
  uint32_t idx = 0;
  struct dirent *ent;
  for (;;) {
    errno = 0;
    ent = readdir(d);
    if (ent == NULL) break;
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    napi_value b;
    if (napi_create_buffer_copy(env, strlen(ent->d_name), ent->d_name, NULL, &b) != napi_ok ||
        napi_set_element(env, result, idx++, b) != napi_ok) {
      closedir(d);
      throw_pending(env, "readdir result");
      return NULL;
    }
  }
  int err = errno;
  closedir(d);
  if (err != 0) {
    throw_errno(env, err, "readdir", ".");
    return NULL;
  }
  return result;
}

#define RMTREE_MAX_DEPTH 2048

static char rmtree_failed[NAME_MAX + 1];

/* 0, or -errno with *where naming the entry that failed (valid until the next call). */
static int rmtree_at(int parent, const char *name, dev_t dev, int depth, const char **where) {
  struct stat st;
  *where = name;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISDIR(st.st_mode)) return unlinkat(parent, name, 0) == 0 || errno == ENOENT ? 0 : -errno;
  if (st.st_dev != dev) return -EXDEV;
  if (depth > RMTREE_MAX_DEPTH) return -ELOOP;
  if (st.st_uid == geteuid() && (st.st_mode & 0700) != 0700) {
    if (fchmodat(parent, name, (st.st_mode & 07777) | 0700, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
  }
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat now;
  if (fstat(fd, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    close(fd);
    return -ESTALE;
  }
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int err = errno;
    close(fd);
    return -err;
  }
  int rc = 0;
  for (;;) {
    errno = 0;
    struct dirent *ent = readdir(d);
    if (ent == NULL) {
      if (errno != 0) rc = -errno, *where = name;
      break;
    }
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    rc = rmtree_at(dirfd(d), ent->d_name, dev, depth + 1, where);
    if (rc != 0) {
      /* A name from this DIR's buffer: copy it out before closing. */
      if (*where == ent->d_name) {
        snprintf(rmtree_failed, sizeof rmtree_failed, "%s", ent->d_name);
        *where = rmtree_failed;
      }
      break;
    }
  }
  closedir(d);
  if (rc != 0) return rc;
  *where = name;
  return unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -errno;
}

static napi_value js_rmtreeat(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int dirfd;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "dirfd", &dirfd)) return NULL;
  char *name = get_cstring(env, argv[1], "name");
  if (name == NULL) return NULL;
  struct stat parent;
  if (fstat(dirfd, &parent) != 0) {
    throw_errno(env, errno, "rmtree", name);
    free(name);
    return NULL;
  }
  const char *where = name;
  int rc = rmtree_at(dirfd, name, parent.st_dev, 0, &where);
  if (rc != 0) throw_errno(env, -rc, "rmtree", where);
  free(name);
  return NULL;
}

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* alignedBuffer(size) -> Buffer of `size` bytes (uninitialised) whose first byte is at a multiple of 4096. */
static napi_value js_aligned_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  uint32_t size;
  if (!get_args(env, info, 1, argv) || !get_u32(env, argv[0], "size", &size)) return NULL;
  void *data = NULL;
  if (size == 0 || posix_memalign(&data, 4096, size) != 0) {
    napi_throw_error(env, "ENOMEM", "alignedBuffer: out of memory");
    return NULL;
  }
  if (napi_create_external_buffer(env, size, data, free_aligned, NULL, &out) != napi_ok) {
    free(data);
    throw_pending(env, "napi_create_external_buffer");
    return NULL;
  }
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getpwnam", NULL, js_getpwnam, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getgrnam", NULL, js_getgrnam, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openat", NULL, js_openat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openBeneath", NULL, js_open_beneath, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mkdirat", NULL, js_mkdirat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknodat", NULL, js_mknodat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"symlinkat", NULL, js_symlinkat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"linkat", NULL, js_linkat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"renameat2", NULL, js_renameat2, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlinkat", NULL, js_unlinkat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fchownat", NULL, js_fchownat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fchmodat", NULL, js_fchmodat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"utimensat", NULL, js_utimensat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fstatat", NULL, js_fstatat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fsetxattr", NULL, js_fsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fremovexattr", NULL, js_fremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readdirfd", NULL, js_readdirfd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rmtreeat", NULL, js_rmtreeat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"alignedBuffer", NULL, js_aligned_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  /* O_TMPFILE's value differs between architectures (it includes O_DIRECTORY): this header's. */
  napi_value tmpfile;
  if (napi_create_uint32(env, O_TMPFILE, &tmpfile) != napi_ok || napi_set_named_property(env, exports, "O_TMPFILE", tmpfile) != napi_ok)
    return NULL;
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok ||
      deflate_register(env, exports) != napi_ok || lz4_register(env, exports) != napi_ok ||
      extract_register(env, exports) != napi_ok || files_register(env, exports) != napi_ok || sha256_register(env, exports) != napi_ok ||
      read_ahead_register(env, exports) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

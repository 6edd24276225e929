/*
 * Files whose contents the caller holds, written beneath a tree's root on libuv's pool: the
 * files of `strata unsquash` (compose/tree/image.ts), read out of an image on the JS thread.
 * Also what extract.c shares with it: how a written file is finished, as a batch carries it.
 *
 * Each file is created as openBeneath does (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * | RESOLVE_NO_XDEV, O_CREAT | O_EXCL), its pieces written where they go in it (what lies
 * between them stays a hole), its size set, and then it is either finished here (owner, mode,
 * mtime, close) or handed back open for the caller to finish (a file with xattrs or ACLs).
 * The first failure stops the batch; the files after it are not reached.
 *
 * JS surface (native/files.ts wraps it):
 *   writeFiles(rootFd, batch: Buffer, count, body: Buffer) -> Promise<result>
 * rootFd stays the caller's, open until the promise settles; so do batch and body, unchanged.
 * A batch is `count` records, each a 48-byte head of little-endian numbers, the bytes of the
 * file's path below the root, its finish's ACL value (aclLength bytes), then `pieces` pairs
 * of f64 (offset in the file, length):
 *   u32 pathLength, u32 pieces, [finish: u32 flags, u32 uid, u32 gid, u32 mode,
 *   u32 modeRefused, u32 aclLength, f64 mtime], f64 size
 * The pieces' bytes follow each other in `body`, in the order of the records.
 * result: { fds: Int32Array (a handed-back descriptor, -1 finished here, -2 not reached),
 *           refused: Uint8Array (1: the fchown was refused),
 *           failed: index of the file that failed, or -1; errno, syscall when it did }
 *
 * The finish part of a record (extractRun's too): flags FINISH (1) finish the file here, else
 * hand it back open; CHOWN (2) fchown it to uid (0xffffffff: leave) and gid; STRICT (4) a
 * refused fchown (EPERM) fails the batch, else EPERM and EINVAL only set modeRefused instead
 * of mode (a user who may not give files away). aclLength (finished files only): the bytes of
 * a system.posix_acl_access value set after the mode. A refusal of it (EPERM, EACCES,
 * ENOTSUP, or EINVAL: an id this user namespace does not map), or a refused fchown of a file
 * with one, hands the file back open instead: the caller narrows its mode (finish_fd). A
 * file finished here is created with its final mode when the umask allows (no fchmod then).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "native.h"

/* ---- what extract.c shares ------------------------------------------------------------------ */

uint32_t read_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

char *copy_cstring(const uint8_t *p, uint32_t n) {
  if (memchr(p, 0, n) != NULL) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s == NULL) return NULL;
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

bool finish_read(const uint8_t *r, file_finish *f) {
  double mtime;
  memcpy(&mtime, r + 24, 8);
  if (!(mtime >= -9007199254740991.0 && mtime <= 9007199254740991.0)) return false;
  f->flags = read_le32(r);
  f->uid = read_le32(r + 4);
  f->gid = read_le32(r + 8);
  f->mode = read_le32(r + 12) & 07777;
  f->mode_refused = read_le32(r + 16) & 07777;
  f->acl_len = read_le32(r + 20);
  f->mtime = (time_t)mtime;
  f->acl = NULL;
  return f->acl_len == 0 || ((f->flags & FINISH_HERE) && f->acl_len >= 4 && f->acl_len <= FINISH_ACL_MAX);
}

bool finish_read_acl(const uint8_t *p, size_t avail, file_finish *f) {
  if (f->acl_len == 0) return true;
  if (avail < f->acl_len || (f->acl = malloc(f->acl_len)) == NULL) return false;
  memcpy(f->acl, p, f->acl_len);
  return true;
}

int process_umask(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (f == NULL) return -1;
  char line[128];
  int mask = -1;
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned m;
    if (sscanf(line, "Umask: %o", &m) == 1) {
      mask = (int)(m & 0777);
      break;
    }
  }
  fclose(f);
  return mask;
}

mode_t finish_create_mode(const file_finish *f, int umask) {
  if ((f->flags & FINISH_HERE) && umask >= 0 && (f->mode & 07000) == 0 && (f->mode & (mode_t)umask) == 0) return f->mode;
  return 0600;
}

int finish_fd(int fd, const file_finish *f, int umask, bool *refused, bool *kept_open, const char **call) {
  mode_t mode = f->mode;
  bool chmod_needed = finish_create_mode(f, umask) != mode;
  int e = 0;
  *call = NULL;
  *kept_open = false;
  if ((f->flags & FINISH_CHOWN) && fchown(fd, f->uid, f->gid) < 0) {
    e = errno;
    if (e == EINVAL || (e == EPERM && !(f->flags & FINISH_STRICT))) {
      if (f->acl != NULL) {
        *kept_open = true;
        return 0;
      }
      *refused = true;
      mode = f->mode_refused;
      chmod_needed = true;
      e = 0;
    } else {
      *call = "fchown";
    }
  }
  if (*call == NULL && chmod_needed && fchmod(fd, mode) < 0) *call = "fchmod", e = errno;
  /* After the mode, whose group bits the ACL's mask then sets, as compose/tree/writer.ts orders them. */
  if (*call == NULL && f->acl != NULL && fsetxattr(fd, "system.posix_acl_access", f->acl, f->acl_len, 0) < 0) {
    e = errno;
    if (e == EPERM || e == EACCES || e == ENOTSUP || e == EOPNOTSUPP || e == EINVAL) {
      /* The mode set above has the mask as its group bits; the caller narrows it. */
      *kept_open = true;
      return 0;
    }
    *call = "fsetxattr";
  }
  struct timespec ts[2] = {{f->mtime, 0}, {f->mtime, 0}};
  if (*call == NULL && futimens(fd, ts) < 0) *call = "futime", e = errno;
  if (close(fd) < 0 && errno != EINTR && *call == NULL) *call = "close", e = errno;
  return *call == NULL ? 0 : e;
}

static bool set_prop(napi_env env, napi_value obj, const char *key, napi_value v) {
  return napi_set_named_property(env, obj, key, v) == napi_ok;
}

napi_value batch_result(napi_env env, uint32_t n, const int32_t *fds, const uint8_t *refused, int32_t failed, int err, const char *syscall) {
  napi_value result, fds_ab, fds_v, ref_ab, ref_v, v;
  void *fd_bytes = NULL, *ref_bytes = NULL;
  size_t k = n ? n : 1;
  bool ok = napi_create_object(env, &result) == napi_ok && napi_create_arraybuffer(env, k * 4, &fd_bytes, &fds_ab) == napi_ok &&
            napi_create_typedarray(env, napi_int32_array, n, fds_ab, 0, &fds_v) == napi_ok &&
            napi_create_arraybuffer(env, k, &ref_bytes, &ref_ab) == napi_ok &&
            napi_create_typedarray(env, napi_uint8_array, n, ref_ab, 0, &ref_v) == napi_ok && set_prop(env, result, "fds", fds_v) &&
            set_prop(env, result, "refused", ref_v) && napi_create_int32(env, failed, &v) == napi_ok && set_prop(env, result, "failed", v);
  if (ok && syscall != NULL) {
    ok = napi_create_int32(env, err, &v) == napi_ok && set_prop(env, result, "errno", v) &&
         napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok && set_prop(env, result, "syscall", v);
  }
  if (!ok) return NULL;
  memcpy(fd_bytes, fds, (size_t)n * 4);
  memcpy(ref_bytes, refused, n);
  return result;
}

/* ---- writeFiles ----------------------------------------------------------------------------- */

#define HEAD 48

typedef struct {
  char *path;
  uint32_t pieces;
  const uint8_t *pairs; /* in the batch buffer: (offset, length) as f64 each */
  uint64_t size;
  file_finish finish;
} held_file;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref batch_ref, body_ref;
  int root, umask;
  held_file *files;
  uint32_t n;
  const uint8_t *body;
  int32_t *fds;
  uint8_t *refused;
  int32_t failed;
  int err;
  const char *syscall;
} files_job;

static void files_job_free(napi_env env, files_job *j) {
  if (j->batch_ref) napi_delete_reference(env, j->batch_ref);
  if (j->body_ref) napi_delete_reference(env, j->body_ref);
  if (j->files)
    for (uint32_t i = 0; i < j->n; i++) free(j->files[i].path), free(j->files[i].finish.acl);
  free(j->files);
  free(j->fds);
  free(j->refused);
  free(j);
}

static double f64(const uint8_t *p) {
  double v;
  memcpy(&v, p, 8);
  return v;
}

/* Writes `n` bytes at `offset`; 0 or an errno. */
static int write_at(int fd, const uint8_t *p, uint64_t n, uint64_t offset) {
  while (n > 0) {
    ssize_t r = pwrite(fd, p, n > (1u << 30) ? (1u << 30) : (size_t)n, (off_t)offset);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += r;
    n -= (uint64_t)r;
    offset += (uint64_t)r;
  }
  return 0;
}

static void files_execute(napi_env env, void *data) {
  (void)env;
  files_job *j = data;
  const uint8_t *body = j->body;
  for (uint32_t i = 0; i < j->n; i++) {
    held_file *f = &j->files[i];
    int fd = open_beneath_fd(j->root, f->path, O_WRONLY | O_CREAT | O_EXCL, finish_create_mode(&f->finish, j->umask));
    if (fd < 0) {
      j->failed = (int32_t)i, j->err = errno, j->syscall = "openat2";
      return;
    }
    uint64_t end = 0;
    int e = 0;
    for (uint32_t k = 0; k < f->pieces && e == 0; k++) {
      uint64_t offset = (uint64_t)f64(f->pairs + 16 * k), len = (uint64_t)f64(f->pairs + 16 * k + 8);
      e = write_at(fd, body, len, offset);
      body += len;
      end = offset + len;
    }
    const char *call = e ? "write" : NULL;
    if (e == 0 && end < f->size && ftruncate(fd, (off_t)f->size) < 0) e = errno, call = "ftruncate";
    if (e != 0) {
      close(fd);
      j->failed = (int32_t)i, j->err = e, j->syscall = call;
      return;
    }
    if (!(f->finish.flags & FINISH_HERE)) {
      j->fds[i] = fd;
      continue;
    }
    bool refused = false, kept_open = false;
    e = finish_fd(fd, &f->finish, j->umask, &refused, &kept_open, &call);
    j->refused[i] = refused;
    if (e != 0) {
      j->failed = (int32_t)i, j->err = e, j->syscall = call;
      return;
    }
    j->fds[i] = kept_open ? fd : -1;
  }
}

static void files_complete(napi_env env, napi_status status, void *data) {
  files_job *j = data;
  napi_value result = status == napi_ok ? batch_result(env, j->n, j->fds, j->refused, j->failed, j->err, j->syscall) : NULL;
  if (result != NULL) {
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    /* The results reach no one: close what was handed back. */
    for (uint32_t i = 0; i < j->n; i++)
      if (j->fds[i] >= 0) close(j->fds[i]);
    napi_value msg, err;
    napi_create_string_utf8(env, "writeFiles did not complete", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  files_job_free(env, j);
}

/* The batch's records into j->files, checked against the body; false after throwing. */
static bool read_files(napi_env env, files_job *j, const uint8_t *b, size_t len, size_t body_len) {
  size_t at = 0, body_used = 0;
  for (uint32_t i = 0; i < j->n; i++) {
    if (len - at < HEAD) goto bad;
    const uint8_t *r = b + at;
    held_file *f = &j->files[i];
    uint32_t pl = read_le32(r);
    double size = f64(r + 40);
    f->pieces = read_le32(r + 4);
    at += HEAD;
    if (pl == 0 || len - at < pl || !finish_read(r + 8, &f->finish) || !(size >= 0 && size <= 9007199254740991.0) || size != (double)(uint64_t)size) goto bad;
    f->size = (uint64_t)size;
    if ((f->path = copy_cstring(b + at, pl)) == NULL) goto bad;
    at += pl;
    if (!finish_read_acl(b + at, len - at, &f->finish)) goto bad;
    at += f->finish.acl_len;
    if ((len - at) / 16 < f->pieces) goto bad;
    f->pairs = b + at;
    double end = 0;
    for (uint32_t k = 0; k < f->pieces; k++) {
      double offset = f64(f->pairs + 16 * k), n = f64(f->pairs + 16 * k + 8);
      if (!(offset >= end && n >= 1 && offset + n <= size && n <= (double)(body_len - body_used))) goto bad;
      if (offset != (double)(uint64_t)offset || n != (double)(uint64_t)n) goto bad;
      end = offset + n;
      body_used += (size_t)n;
    }
    at += (size_t)f->pieces * 16;
  }
  if (at == len && body_used == body_len) return true;
bad:
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "writeFiles: the batch is not count records of files whose pieces fill the body");
  return false;
}

static napi_value js_write_files(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t root;
  uint32_t count;
  bool is_buffer = false, body_is_buffer = false;
  void *bytes = NULL, *body = NULL;
  size_t len = 0, body_len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_int32(env, argv[0], &root) != napi_ok || root < 0 ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[1], &bytes, &len) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &count) != napi_ok || napi_is_buffer(env, argv[3], &body_is_buffer) != napi_ok || !body_is_buffer ||
      napi_get_buffer_info(env, argv[3], &body, &body_len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeFiles(rootFd, batch: Buffer, count: number, body: Buffer)");
    return NULL;
  }
  files_job *j = calloc(1, sizeof *j);
  size_t k = count ? count : 1;
  if (j == NULL || (j->files = calloc(k, sizeof *j->files)) == NULL || (j->fds = malloc(k * sizeof *j->fds)) == NULL ||
      (j->refused = calloc(k, 1)) == NULL) {
    if (j) files_job_free(env, j);
    napi_throw_error(env, "ENOMEM", "writeFiles: out of memory");
    return NULL;
  }
  j->n = count;
  j->root = root;
  j->umask = process_umask();
  j->failed = -1;
  j->body = body;
  for (uint32_t i = 0; i < count; i++) j->fds[i] = -2;
  if (!read_files(env, j, bytes, len, body_len)) {
    files_job_free(env, j);
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &j->batch_ref) != napi_ok || napi_create_reference(env, argv[3], 1, &j->body_ref) != napi_ok) {
    files_job_free(env, j);
    throw_pending(env, "writeFiles");
    return NULL;
  }
  napi_value promise = queue_job(env, "writeFiles", files_execute, files_complete, j, &j->work, &j->deferred);
  if (promise == NULL) files_job_free(env, j);
  return promise;
}

napi_status files_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"writeFiles", NULL, js_write_files, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

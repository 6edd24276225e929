/*
 * What native/addon.c shares with the addon's other files.
 */
#ifndef STRATA_NATIVE_H
#define STRATA_NATIVE_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Throws a generic error naming `what` unless an exception is already pending. */
void throw_pending(napi_env env, const char *what);
/* A file offset or length: a safe non-negative integer into *out; false (nothing thrown: the caller says its usage) for anything else. */
bool get_offset(napi_env env, napi_value v, int64_t *out);
/* Throws an Error shaped like Node's fs errors for errno `err`: "CODE: description, syscall 'path'". */
void throw_errno(napi_env env, int err, const char *syscall, const char *path);

/*
 * openBeneath's rule for one path (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, O_NOFOLLOW | O_CLOEXEC; a walk by hand on kernels
 * without openat2): the new descriptor, or -1 with errno set. Thread-safe.
 */
int open_beneath_fd(int dirfd, const char *path, int flags, mode_t mode);

/*
 * Queues `data`'s work on libuv's pool and returns the promise `done` settles; NULL with a
 * pending exception when it could not (the caller still owns `data` then).
 */
napi_value queue_job(napi_env env, const char *what, napi_async_execute_callback execute, napi_async_complete_callback done, void *data,
                     napi_async_work *work, napi_deferred *deferred);

/*
 * An External holding `data`, tagged with `tag` (napi_type_tag_object): `finalize` frees data
 * when the object is collected. NULL with a pending exception when it could not be made (the
 * caller still owns `data` then).
 */
napi_value tagged_external(napi_env env, void *data, napi_finalize finalize, const napi_type_tag *tag);
/* The data of an External made by tagged_external with `tag`; NULL (TypeError `usage` thrown) for anything else. */
void *tagged_external_data(napi_env env, napi_value v, const napi_type_tag *tag, const char *usage);

/*
 * native/files.c: how a written file is finished, as a batch record carries it (32 bytes of
 * little-endian numbers: u32 flags, uid, gid, mode, modeRefused, aclLength, f64 mtime; the
 * record's aclLength bytes of a system.posix_acl_access value follow its paths), shared by
 * extractRun and writeFiles.
 */
enum { FINISH_HERE = 1, FINISH_CHOWN = 2, FINISH_STRICT = 4 };
/* The largest ACL value a record may carry: 4 + 8 bytes an entry, as many entries as the kernel's 32 pages of xattr value would hold are far more than any tree has. */
#define FINISH_ACL_MAX 65536
typedef struct {
  uint32_t flags, uid, gid, mode, mode_refused, acl_len;
  time_t mtime;
  uint8_t *acl; /* finish_read_acl's copy of the value, or NULL; the job frees it */
} file_finish;
uint32_t read_le32(const uint8_t *p);
/* A NUL-terminated copy of n bytes; NULL when they hold a NUL or memory ran out. */
char *copy_cstring(const uint8_t *p, uint32_t n);
/* The 32-byte finish record at `r` into `f`; false when its mtime is not a safe integer, or it carries an ACL it may not. */
bool finish_read(const uint8_t *r, file_finish *f);
/* The record's ACL value, f->acl_len bytes at `p` of `avail` there, copied into f->acl; false when they are not there or memory ran out. */
bool finish_read_acl(const uint8_t *p, size_t avail, file_finish *f);
/* The process's umask from /proc/self/status (umask(2) would change it for a moment, for every thread); -1 when absent. */
int process_umask(void);
/*
 * The mode a file is created with: its final one when it is finished here, the umask leaves it
 * whole and it has no setuid, setgid or sticky bit (a chown would clear those), so no fchmod
 * is needed after; else 0600 (the tree's private root keeps everyone else out meanwhile).
 */
mode_t finish_create_mode(const file_finish *f, int umask);
/*
 * Owner, mode, access ACL and mtime of a written file (created with finish_create_mode), then
 * close: 0, or the errno of the call *call names. *refused is set when a chown that may be
 * refused was, or the ACL was (EPERM, EACCES, ENOTSUP). A file with an ACL whose chown is
 * refused is left open, *kept_open set: the group class of its ACL depends on the group it
 * keeps, which the caller's policy decides (compose/tree/writer.ts).
 */
int finish_fd(int fd, const file_finish *f, int umask, bool *refused, bool *kept_open, const char **call);
/* A batch's result object { fds, refused, failed, errno?, syscall? }; NULL when it could not be made. */
napi_value batch_result(napi_env env, uint32_t n, const int32_t *fds, const uint8_t *refused, int32_t failed, int err, const char *syscall);
/* Adds writeFiles to `exports`. */
napi_status files_register(napi_env env, napi_value exports);

/* native/extract.c: adds extractAvailable, extractOpen, extractRun and extractClose to `exports`. */
napi_status extract_register(napi_env env, napi_value exports);

/*
 * native/sha256.c: sha256 through the process's own libcrypto (EVP), its calls found at run
 * time. sha256_available resolves them once (call it on the JS thread before the others,
 * which are thread-safe on contexts of their own).
 */
typedef struct evp_md_ctx EVP_MD_CTX;
bool sha256_available(void);
/* A fresh context, or NULL (out of memory). */
EVP_MD_CTX *sha256_new(void);
void sha256_update(EVP_MD_CTX *c, const void *data, size_t n);
/* The digest as 64 lowercase hex digits and a NUL; the context is spent. */
void sha256_hex(EVP_MD_CTX *c, char out[65]);
void sha256_free(EVP_MD_CTX *c);
/* Adds hashOpen, hashUpdate, hashDigest, hashCopy and sha256Into to `exports`. */
napi_status sha256_register(napi_env env, napi_value exports);

/* native/readahead.c: adds readAheadOpen, readAheadTake, readAheadSeek and readAheadClose to `exports`. */
napi_status read_ahead_register(napi_env env, napi_value exports);

#endif

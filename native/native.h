/*
 * What native/addon.c shares with the addon's other files.
 */
#ifndef STRATA_NATIVE_H
#define STRATA_NATIVE_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Throws a generic error naming `what` unless an exception is already pending. */
void throw_pending(napi_env env, const char *what);

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

#endif

/*
 * What native/addon.c shares with the addon's other files.
 */
#ifndef STRATA_NATIVE_H
#define STRATA_NATIVE_H
#include <node_api.h>
#include <sys/types.h>

/* Throws a generic error naming `what` unless an exception is already pending. */
void throw_pending(napi_env env, const char *what);

/*
 * openBeneath's rule for one path (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, O_NOFOLLOW | O_CLOEXEC; a walk by hand on kernels
 * without openat2): the new descriptor, or -1 with errno set. Thread-safe.
 */
int open_beneath_fd(int dirfd, const char *path, int flags, mode_t mode);

/* native/extract.c: adds extractAvailable, extractOpen, extractRun and extractClose to `exports`. */
napi_status extract_register(napi_env env, napi_value exports);

#endif

/*
 * A file read in sequence by a thread of its own, ahead of the JS thread that parses it.
 *
 * An import of a plain tar in canonical order is bound by its main thread: it parses every
 * header and writes the canonical tar, while the blob's hash and writes run on libuv's pool and
 * leave the other core mostly idle. Reading the archive was a sixth of that thread's time (the
 * 100,000-file import: 0.2 of 1.2 s in read(2), the page cache copying 171 MB). Here a thread
 * reads the file into a ring of the caller's buffers, and the JS thread takes each filled one
 * with a call that does not enter the kernel unless it has to wait.
 *
 *   readAheadOpen(fd, from, end, slots) -> handle   reads [from, end) of fd into `slots`
 *        (Buffers of equal length, at least 3), in ring order, on a thread it starts; the
 *        caller keeps fd open until readAheadClose
 *   readAheadTake(handle) -> n                      bytes in the next slot of the ring, once the
 *        thread has filled it (waits until then); 0 at the end. The slot taken before this
 *        one stays the caller's until the next take: a chunk handed out is intact through the
 *        one after it. A read that failed throws, as Node's fs calls do ('read', after the
 *        bytes before it have been taken)
 *   readAheadSeek(handle, pos)                      the filled slots not taken are dropped and
 *        reading goes on from pos; the next take gives the slot after the last taken
 *   readAheadClose(handle)                          stops and joins the thread; idempotent. A
 *        handle collected without it is closed then
 *
 * The slots are the caller's Buffers, kept alive by references until the close. The thread
 * writes only slots that are neither filled nor held by the caller, under the ring's lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "native.h"

typedef struct {
  int fd;
  uint32_t count;
  size_t slot_size;
  uint8_t **mem;
  uint32_t *len;
  napi_ref *refs;
  /* Guarded by mu: the ring's state. Slots [take - held, take) are the caller's; [take, take +
   * filled) filled; the rest free, the thread filling the one at take + filled. */
  pthread_mutex_t mu;
  pthread_cond_t wake_reader, wake_taker;
  uint32_t take, filled, held;
  int64_t pos, end;
  uint64_t generation; /* bumped by a seek: a read begun before it is dropped */
  int err;
  bool stop;
  /* The reader waits until the taker has freed half the ring (or seeks, or closes). */
  bool sleeping;
  bool started, closed;
  pthread_t thread;
} read_ahead;

static const napi_type_tag READ_AHEAD_TAG = {0x7374726174612d72ULL, 0x6561646168656164ULL};

static void *reader_main(void *arg) {
  read_ahead *r = arg;
  pthread_setname_np(pthread_self(), "strata-read");
  pthread_mutex_lock(&r->mu);
  for (;;) {
    if (r->stop) break;
    if (r->err != 0 || r->pos >= r->end || r->filled + r->held >= r->count) {
      /* Asleep until half the ring is free: woken at every take, this thread sat waiting
       * for the core of the thread that woke it (the scheduler puts it there), and the taker
       * caught up with it. */
      r->sleeping = true;
      while (!r->stop && r->sleeping) pthread_cond_wait(&r->wake_reader, &r->mu);
      continue;
    }
    uint32_t slot = (r->take + r->filled) % r->count;
    uint64_t generation = r->generation;
    int64_t at = r->pos;
    size_t want = r->slot_size;
    if ((int64_t)want > r->end - at) want = (size_t)(r->end - at);
    pthread_mutex_unlock(&r->mu);
    size_t got = 0;
    int err = 0;
    while (got < want) {
      ssize_t n = pread(r->fd, r->mem[slot] + got, want - got, at + (int64_t)got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) err = errno;
      if (n <= 0) break;
      got += (size_t)n;
    }
    pthread_mutex_lock(&r->mu);
    if (generation != r->generation) continue;
    if (got > 0) {
      r->len[slot] = (uint32_t)got;
      r->filled++;
      r->pos += (int64_t)got;
    }
    if (err != 0) r->err = err;
    else if (got < want) r->end = r->pos; /* the file is shorter than it was: its end is here */
    pthread_cond_signal(&r->wake_taker);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

static void read_ahead_close(napi_env env, read_ahead *r) {
  if (r->closed) return;
  r->closed = true;
  if (r->started) {
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    r->sleeping = false;
    pthread_cond_signal(&r->wake_reader);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
  }
  for (uint32_t i = 0; i < r->count; i++)
    if (r->refs[i] != NULL) napi_delete_reference(env, r->refs[i]);
}

static void read_ahead_free(read_ahead *r) {
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->wake_reader);
  pthread_cond_destroy(&r->wake_taker);
  free(r->mem);
  free(r->len);
  free(r->refs);
  free(r);
}

static void read_ahead_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  read_ahead_close(env, data);
  read_ahead_free(data);
}

static napi_value js_read_ahead_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int64_t fd, from, end;
  uint32_t count = 0;
  bool is_array = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 4) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "readAheadOpen(fd, from, end, slots)");
    return NULL;
  }
  if (!get_offset(env, argv[0], &fd) || fd > INT32_MAX || !get_offset(env, argv[1], &from) || !get_offset(env, argv[2], &end) ||
      napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[3], &count) != napi_ok || count < 3 ||
      count > 1024) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "readAheadOpen(fd, from, end, slots: 3 to 1024 Buffers)");
    return NULL;
  }
  read_ahead *r = calloc(1, sizeof *r);
  if (r == NULL || (r->mem = calloc(count, sizeof *r->mem)) == NULL || (r->len = calloc(count, sizeof *r->len)) == NULL ||
      (r->refs = calloc(count, sizeof *r->refs)) == NULL) {
    if (r != NULL) {
      free(r->mem);
      free(r->len);
    }
    free(r);
    napi_throw_error(env, "ENOMEM", "readAheadOpen: out of memory");
    return NULL;
  }
  r->fd = (int)fd;
  r->count = count;
  r->pos = from;
  r->end = end;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->wake_reader, NULL);
  pthread_cond_init(&r->wake_taker, NULL);
  napi_value handle = tagged_external(env, r, read_ahead_finalize, &READ_AHEAD_TAG);
  if (handle == NULL) {
    read_ahead_free(r);
    return NULL;
  }
  /* From here the handle owns r: a failure below leaves it to the finalizer. */
  for (uint32_t i = 0; i < count; i++) {
    napi_value slot;
    bool is_buffer = false;
    void *data = NULL;
    size_t size = 0;
    if (napi_get_element(env, argv[3], i, &slot) != napi_ok || napi_is_buffer(env, slot, &is_buffer) != napi_ok || !is_buffer ||
        napi_get_buffer_info(env, slot, &data, &size) != napi_ok || size == 0 || size > UINT32_MAX || (i > 0 && size != r->slot_size)) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "readAheadOpen: slots must be non-empty Buffers of one length");
      return NULL;
    }
    if (napi_create_reference(env, slot, 1, &r->refs[i]) != napi_ok) {
      throw_pending(env, "napi_create_reference");
      return NULL;
    }
    r->mem[i] = data;
    r->slot_size = size;
  }
  int err = pthread_create(&r->thread, NULL, reader_main, r);
  if (err != 0) {
    napi_throw_error(env, "EAGAIN", "readAheadOpen: cannot start the reading thread");
    return NULL;
  }
  r->started = true;
  return handle;
}

static read_ahead *handle_arg(napi_env env, napi_value v, const char *usage) {
  read_ahead *r = tagged_external_data(env, v, &READ_AHEAD_TAG, usage);
  if (r != NULL && r->closed) {
    napi_throw_error(env, "ERR_INVALID_STATE", "the read-ahead is closed");
    return NULL;
  }
  return r;
}

static napi_value js_read_ahead_take(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  read_ahead *r = handle_arg(env, argv[0], "readAheadTake(handle)");
  if (r == NULL) return NULL;
  pthread_mutex_lock(&r->mu);
  /* The slot taken before the last one is free again: the last one is still the caller's. */
  if (r->held > 1) r->held--;
  while (r->filled == 0 && r->err == 0 && r->pos < r->end) pthread_cond_wait(&r->wake_taker, &r->mu);
  uint32_t n = 0;
  int err = 0;
  if (r->filled > 0) {
    n = r->len[r->take];
    r->take = (r->take + 1) % r->count;
    r->filled--;
    r->held++;
  } else {
    err = r->err;
  }
  if (r->sleeping && r->count - r->filled - r->held >= r->count / 2) {
    r->sleeping = false;
    pthread_cond_signal(&r->wake_reader);
  }
  pthread_mutex_unlock(&r->mu);
  if (err != 0) {
    throw_errno(env, err, "read", "");
    return NULL;
  }
  napi_value v;
  if (napi_create_uint32(env, n, &v) != napi_ok) return NULL;
  return v;
}

static napi_value js_read_ahead_seek(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t pos;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return NULL;
  read_ahead *r = handle_arg(env, argv[0], "readAheadSeek(handle, pos)");
  if (r == NULL) return NULL;
  if (!get_offset(env, argv[1], &pos)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "readAheadSeek(handle, pos: a file offset)");
    return NULL;
  }
  pthread_mutex_lock(&r->mu);
  r->generation++;
  r->filled = 0;
  r->pos = pos;
  r->err = 0;
  r->sleeping = false;
  pthread_cond_signal(&r->wake_reader);
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

static napi_value js_read_ahead_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  read_ahead *r = tagged_external_data(env, argv[0], &READ_AHEAD_TAG, "readAheadClose(handle)");
  if (r != NULL) read_ahead_close(env, r);
  return NULL;
}

napi_status read_ahead_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readAheadOpen", NULL, js_read_ahead_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readAheadTake", NULL, js_read_ahead_take, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readAheadSeek", NULL, js_read_ahead_seek, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readAheadClose", NULL, js_read_ahead_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

/*
 * Layer extraction on libuv's pool: the file contents of a sandbox (compose/sandbox.ts).
 *
 * A session reads one canonical layer blob (spec/store.md) once, from its first byte to its
 * last, and in that one pass
 *   - hashes every byte: the blob's sha256, its name in the store;
 *   - derives the layer's entry list from its headers, as the text the store's entry-list
 *     cache holds (store/entry-rows.ts: `[`, a JSON row per entry on a line of its own, `]`),
 *     and hashes that: the store checks it against the digest of the list the plan was made
 *     from (openLayerBlob), as its readLayer does for the image writers;
 *   - writes the files the plan wants from the layer, in the layer's order: each is created
 *     beneath the tree's root as openBeneath does (openat2 with RESOLVE_BENEATH |
 *     RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV, O_CREAT | O_EXCL, 0600), its body written, and
 *     then either finished here (owner, mode, mtime, close) or handed back open for the caller
 *     to finish (a file with xattrs or ACLs).
 * Nothing of the tar decides where a file goes: the plan names each file's path in the tree
 * and the tar member whose body it gets (by its path in the tar, in order). A blob that is not
 * what the plan says fails the build, which the caller makes visible only after every layer
 * was read to its end and both digests matched.
 *
 * The files come in batches; each batch runs on a thread of libuv's pool. Runs of one session
 * never overlap (the caller waits for one before starting the next), so a session needs no
 * lock; sessions of different layers run at once. sha256 is the one of Node's own OpenSSL,
 * found in the process at run time (native/sha256.c), so nothing more is built or linked.
 *
 * JS surface (native/extract.ts wraps it):
 *   extractAvailable -> boolean
 *   extractOpen(blobFd, rootFd) -> session          both descriptors stay the caller's, open
 *                                                   until the session is closed
 *   extractRun(session, batch: Buffer, count, last) -> Promise<result>
 *   extractClose(session)
 * A batch is `count` records, each a 40-byte head of little-endian numbers, then the bytes
 * of the member's path in the tar, those of the file's path below the root, and its finish's
 * ACL value (aclLength bytes):
 *   u32 tarPathLength, u32 pathLength, u32 flags, u32 uid, u32 gid, u32 mode, u32 modeRefused,
 *   u32 aclLength, f64 mtime
 * (its last 32 bytes, from flags on, are the finish record native/files.c describes: whether
 * the file is finished here, and its owner, mode, access ACL and mtime).
 * result: { fds: Int32Array (a handed-back descriptor, -1 finished here, -2 not reached),
 *           refused: Uint8Array (1: the fchown was refused),
 *           failed: index of the file that failed, or -1; errno, syscall when it did,
 *           problem: a string when the blob is not a tar of a layer, or a planned file is not
 *           in it (the rest of the blob is still hashed),
 *           blob, rows: sha256 hex, after the last batch }
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "native.h"

/* ---- the session ------------------------------------------------------------------------- */

#define BLOCK 512
/*
 * Bytes one read fills: a multiple of BLOCK, so no header straddles two slots. Each session's
 * ring is fresh memory, a page fault per page on first touch; 1 MiB slots bought no speed.
 */
#define SLOT (1 << 18)
/* Slots of the ring the reader fills and the writers empty: the session's memory. */
#define SLOTS 8
/* Threads that create, write and finish files. */
#define WRITERS 2
/* Files handed to the writers and not yet taken, at most. */
#define QUEUE 256
/* Files the reader gathers before handing them over under one lock. */
#define HANDOFF 32
/* Files a writer takes at once (the first one, then only files whose bytes are all read). */
#define TAKE 16
/* A pax header's records, at most (strata writes a few hundred bytes). */
#define PAX_MAX (1 << 20)

enum { FD_FINISHED = -1, FD_NOT_REACHED = -2 };

typedef struct {
  char *tar_path, *path;
  file_finish finish;
} wanted_file;

/* Where the parser is: at a header, in a pax header's records, or past the end-of-archive block. */
typedef enum { AT_HEADER, AT_PAX, AT_END } position;

/* A growing byte string: a row of the entry list being made. */
typedef struct {
  char *data;
  size_t len, cap;
  bool failed; /* out of memory */
} text;

/*
 * A file of the batch for a writer: its index, where its body is in the blob, and which
 * directory it goes into (a hash of its parent's path: equal for the files of one directory).
 */
typedef struct {
  uint32_t index, dir;
  uint64_t start, len;
  bool taken; /* in the queue: taken by a writer out of turn */
} job;

struct run_job;

/*
 * One layer blob being read. The reader (the thread of libuv's pool that runs a batch) reads
 * the blob a slot at a time into a ring, hashes each slot as it is read, and parses the
 * headers; each file the batch wants becomes a job for the writers, which create it and write
 * its body straight from the ring. A slot is read again only once nobody needs its bytes (the
 * low-water mark: the parser's position, the queued jobs' starts, the writers' positions).
 * Everything below `mu` is shared; the rest is the reader's.
 */
typedef struct {
  int blob, root;
  /* The process's umask, or -1 when it cannot be read without changing it (always fchmod). */
  int umask;
  EVP_MD_CTX *blob_hash, *rows_hash;
  uint64_t rows; /* entries seen */
  text row;
  uint8_t *slot[SLOTS];
  uint64_t pos; /* the next byte the parser needs */
  position where;
  uint8_t *pax; /* the pax records being gathered */
  size_t pax_len, pax_want;
  uint32_t pax_pad;
  /* What the last pax header said: path, linkpath, and the numbers it set (PAX_* bits). */
  char *pax_path, *pax_link;
  unsigned pax_set;
  uint64_t pax_size, pax_uid, pax_gid;
  int64_t pax_mtime;
  bool busy; /* a run is in flight (the JS thread's flag) */
  job gathered[HANDOFF]; /* files parsed and not yet queued for the writers */
  uint32_t n_gathered;

  pthread_mutex_t mu;
  /* Writers wait for a job, or for bytes not yet read (`starving`); the reader for either side. */
  pthread_cond_t has_job, has_data, to_reader;
  uint64_t read_to; /* bytes of the blob read and hashed */
  bool eof;
  job queue[QUEUE];
  uint32_t q_head, q_len;
  uint64_t writer_at[WRITERS]; /* the first byte each writer still needs; UINT64_MAX when idle */
  uint32_t writer_dir[WRITERS]; /* the directory of a busy writer's files */
  uint32_t busy_writers, starving; /* writers with a job; writers waiting for bytes not yet read */
  bool reader_waits;
  struct run_job *run; /* the batch the jobs belong to */
  bool abort;          /* the batch failed: writers drop what they hold */
  bool stop;           /* the session closes: writers end */
  pthread_t writers[WRITERS];
  int started; /* writer threads running */
} session;

typedef struct run_job {
  napi_async_work work;
  napi_deferred deferred;
  session *s;
  wanted_file *files;
  uint32_t n, next; /* files, and the next one the layer must reach */
  bool last;
  int32_t *fds;
  uint8_t *refused;
  int32_t failed, err; /* under s->mu once writers run */
  const char *syscall;
  char problem[256];
  char blob_hex[65], rows_hex[65];
} run_job;

enum { PAX_SIZE = 1, PAX_UID = 2, PAX_GID = 4, PAX_MTIME = 8 };

/* An octal (or base-256) number field of a ustar header. */
static bool parse_number(const uint8_t *f, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (f[0] & 0x80) {
    if (f[0] != 0x80) return false; /* negative or too large */
    for (size_t i = 1; i < n; i++) {
      if (v >> 56) return false;
      v = (v << 8) | f[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < n && f[i] == ' ') i++;
  bool digits = false;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
    if (v >> 60) return false;
    v = (v << 3) | (uint64_t)(f[i] - '0');
    digits = true;
  }
  for (; i < n; i++)
    if (f[i] != ' ' && f[i] != 0) return false;
  *out = v;
  return digits;
}

static bool all_zero(const uint8_t *b) {
  for (int i = 0; i < BLOCK; i++)
    if (b[i]) return false;
  return true;
}

static bool checksum_ok(const uint8_t *h) {
  uint64_t want;
  if (!parse_number(h + 148, 8, &want)) return false;
  uint64_t sum = 0;
  for (int i = 0; i < BLOCK; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
  return sum == want;
}

/* The ring's copy of blob byte `at` (read, and not yet given up). */
static uint8_t *at_byte(session *s, uint64_t at) {
  return s->slot[(at / SLOT) % SLOTS] + at % SLOT;
}

/* The lowest byte anyone still needs (under mu). */
static uint64_t low_water(session *s) {
  uint64_t low = s->where == AT_END ? s->read_to : s->pos;
  if (s->q_len > 0 && s->queue[s->q_head].start < low) low = s->queue[s->q_head].start;
  for (int w = 0; w < WRITERS; w++)
    if (s->writer_at[w] < low) low = s->writer_at[w];
  return low;
}

static void set_failed(run_job *j, int32_t index, int err, const char *syscall) {
  if (j->failed >= 0 || j->syscall != NULL) return; /* the first failure is the one told */
  j->failed = index;
  j->err = err;
  j->syscall = syscall;
}

/* A failure of the batch (under mu): recorded, and everyone stops. */
static void fail_locked(session *s, int32_t index, int err, const char *syscall) {
  set_failed(s->run, index, err, syscall);
  s->abort = true;
  pthread_cond_broadcast(&s->has_job);
  pthread_cond_broadcast(&s->has_data);
  pthread_cond_broadcast(&s->to_reader);
}

static bool hand_over(session *s);

/*
 * Reads the next slot of the blob (hashing it), once the bytes it held are needed by nobody.
 * False when the batch was aborted meanwhile, or on a read error (recorded).
 */
static bool read_slot(session *s) {
  if (!hand_over(s)) return false;
  pthread_mutex_lock(&s->mu);
  uint64_t k = s->read_to / SLOT;
  while (!s->abort && k >= SLOTS && low_water(s) < (k - SLOTS + 1) * (uint64_t)SLOT) {
    s->reader_waits = true;
    pthread_cond_wait(&s->to_reader, &s->mu);
  }
  s->reader_waits = false;
  bool go = !s->abort && !s->eof;
  pthread_mutex_unlock(&s->mu);
  if (!go) return false;
  uint8_t *buf = s->slot[k % SLOTS];
  size_t got = 0;
  bool eof = false;
  while (got < SLOT) {
    ssize_t r = pread(s->blob, buf + got, SLOT - got, (off_t)(k * SLOT + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      pthread_mutex_lock(&s->mu);
      fail_locked(s, -1, e, "read");
      pthread_mutex_unlock(&s->mu);
      return false;
    }
    if (r == 0) {
      eof = true;
      break;
    }
    got += (size_t)r;
  }
  sha256_update(s->blob_hash, buf, got);
  pthread_mutex_lock(&s->mu);
  s->read_to += got;
  s->eof = eof;
  if (s->starving > 0) pthread_cond_broadcast(&s->has_data);
  pthread_mutex_unlock(&s->mu);
  return true;
}

static void set_problem(run_job *j, const char *what) {
  if (j->problem[0] == 0) snprintf(j->problem, sizeof j->problem, "%s (at byte %llu)", what, (unsigned long long)j->s->pos);
}

/* Owner, mode, ACL and mtime of a written file, then close (or handed back: finish_fd); false (and the failure set) on an error. */
static bool finish_file(session *s, run_job *j, uint32_t i, int fd) {
  bool refused = false, kept_open = false;
  const char *call;
  int e = finish_fd(fd, &j->files[i].finish, s->umask, &refused, &kept_open, &call);
  if (refused) j->refused[i] = 1;
  if (e == 0) {
    j->fds[i] = kept_open ? fd : FD_FINISHED;
    return true;
  }
  pthread_mutex_lock(&s->mu);
  fail_locked(s, (int32_t)i, e, call);
  pthread_mutex_unlock(&s->mu);
  return false;
}

/*
 * Where a writer is, as far as the others know: `published` is the position it last told
 * (writer_at), `known` how far the blob was read when it last looked. It takes the lock only
 * when it needs bytes past `known`, or once it has moved into a later slot than the one it
 * told, so that the reader may reuse the slots behind it: once per file it must wait for, or
 * per slot of a long body, not per file.
 */
typedef struct {
  int me;
  uint64_t published, known;
} writer_view;

/*
 * Tells the writer's position `pos` and, when its bytes are not read yet, waits for them.
 * False when the batch was aborted, or the blob ends before `pos` (the reader tells).
 */
static bool writer_sync(session *s, writer_view *v, uint64_t pos) {
  pthread_mutex_lock(&s->mu);
  s->writer_at[v->me] = pos;
  v->published = pos;
  if (s->reader_waits) pthread_cond_signal(&s->to_reader);
  while (pos >= s->read_to && !s->eof && !s->abort) {
    s->starving++;
    if (s->reader_waits) pthread_cond_signal(&s->to_reader);
    pthread_cond_wait(&s->has_data, &s->mu);
    s->starving--;
  }
  v->known = s->read_to;
  bool go = !s->abort && pos < v->known;
  pthread_mutex_unlock(&s->mu);
  return go;
}

/*
 * One file: created beneath the root, its body written from the ring, finished or handed
 * back. False when it failed (recorded), or the batch stopped while it waited for bytes.
 */
static bool write_file(session *s, run_job *j, writer_view *v, job f) {
  wanted_file *w = &j->files[f.index];
  int fd = open_beneath_fd(s->root, w->path, O_WRONLY | O_CREAT | O_EXCL, finish_create_mode(&w->finish, s->umask));
  if (fd < 0) {
    int e = errno;
    pthread_mutex_lock(&s->mu);
    fail_locked(s, (int32_t)f.index, e, "openat2");
    pthread_mutex_unlock(&s->mu);
    return false;
  }
  uint64_t pos = f.start, end = f.start + f.len;
  while (pos < end) {
    if ((pos >= v->known || pos / SLOT != v->published / SLOT) && !writer_sync(s, v, pos)) {
      close(fd); /* aborted, or the blob ends inside the body */
      return false;
    }
    uint64_t stop = end < v->known ? end : v->known;
    uint64_t slot_end = (pos / SLOT + 1) * SLOT;
    size_t n = (size_t)((stop < slot_end ? stop : slot_end) - pos);
    const uint8_t *p = at_byte(s, pos);
    for (size_t left = n; left > 0;) {
      ssize_t r = write(fd, p, left);
      if (r < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        pthread_mutex_lock(&s->mu);
        fail_locked(s, (int32_t)f.index, e, "write");
        pthread_mutex_unlock(&s->mu);
        return false;
      }
      p += r;
      left -= (size_t)r;
    }
    pos += n;
  }
  if (!(w->finish.flags & FINISH_HERE)) j->fds[f.index] = fd;
  else if (!finish_file(s, j, f.index, fd)) return false;
  return true;
}

/* True when a busy writer other than `me` writes into directory `dir` (under mu). */
static bool dir_busy(session *s, int me, uint32_t dir) {
  for (int w = 0; w < WRITERS; w++)
    if (w != me && s->writer_at[w] != UINT64_MAX && s->writer_dir[w] == dir) return true;
  return false;
}

/*
 * Where in the queue writer `me` starts taking (under mu): at its head, unless another writer
 * is creating files in the head's directory and a file of a directory nobody writes into is
 * queued behind it, its bytes all read (the writer would wait for them, where the head's it can
 * write now). Two writers in one directory take turns at its lock, and the kernel spins for it:
 * CPU spent for nothing while a file of another directory could be written. Where there is
 * none, sharing the directory is still faster than waiting (spec/decisions.md).
 */
static uint32_t take_from(session *s, int me) {
  if (!dir_busy(s, me, s->queue[s->q_head].dir)) return 0;
  for (uint32_t i = 1; i < s->q_len; i++) {
    const job *f = &s->queue[(s->q_head + i) % QUEUE];
    if (f->start + f->len > s->read_to) break;
    if (!f->taken && !dir_busy(s, me, f->dir)) return i;
  }
  return 0;
}

/*
 * A writer thread: takes queued files until the session closes, several at a time (the first
 * one, then those of its directory that follow it and whose bytes are all read), so that small
 * files cost no lock each. It takes them in order, but passes over those of a directory
 * another writer is in while there are others (take_from); the queue's head is always the
 * first file not taken, whose start the reader keeps (low_water).
 */
static void *writer_main(void *arg) {
  session *s = arg;
  pthread_mutex_lock(&s->mu);
  writer_view v = {0, 0, 0};
  while (v.me < WRITERS && !pthread_equal(s->writers[v.me], pthread_self())) v.me++;
  for (;;) {
    while (!s->stop && s->q_len == 0) pthread_cond_wait(&s->has_job, &s->mu);
    if (s->q_len == 0) break; /* stop */
    job taken[TAKE];
    uint32_t n = 0;
    for (uint32_t i = take_from(s, v.me); i < s->q_len && n < TAKE; i++) {
      job *f = &s->queue[(s->q_head + i) % QUEUE];
      if (f->taken || (n > 0 && (f->dir != taken[0].dir || f->start + f->len > s->read_to))) break;
      taken[n++] = *f;
      f->taken = true;
    }
    while (s->q_len > 0 && s->queue[s->q_head].taken) {
      s->q_head = (s->q_head + 1) % QUEUE;
      s->q_len--;
    }
    run_job *j = s->run;
    bool busy = !s->abort; /* else the files are dropped */
    if (busy) {
      s->busy_writers++;
      s->writer_at[v.me] = v.published = taken[0].start;
      s->writer_dir[v.me] = taken[0].dir;
      v.known = s->read_to;
    }
    if (s->reader_waits) pthread_cond_signal(&s->to_reader);
    pthread_mutex_unlock(&s->mu);
    for (uint32_t i = 0, go = busy; i < n && go; i++) go = write_file(s, j, &v, taken[i]);
    pthread_mutex_lock(&s->mu);
    if (busy) {
      s->writer_at[v.me] = UINT64_MAX;
      s->busy_writers--;
    }
    if (s->reader_waits) pthread_cond_signal(&s->to_reader);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/*
 * Queues the files gathered so far for the writers, under one lock; false when the batch was
 * aborted (they are dropped).
 */
static bool hand_over(session *s) {
  if (s->n_gathered == 0) return true;
  pthread_mutex_lock(&s->mu);
  uint32_t i = 0;
  while (i < s->n_gathered && !s->abort) {
    if (s->q_len == QUEUE) {
      pthread_cond_broadcast(&s->has_job);
      s->reader_waits = true;
      pthread_cond_wait(&s->to_reader, &s->mu);
      s->reader_waits = false;
      continue;
    }
    s->queue[(s->q_head + s->q_len) % QUEUE] = s->gathered[i++];
    s->q_len++;
  }
  bool ok = !s->abort;
  if (ok) pthread_cond_broadcast(&s->has_job);
  pthread_mutex_unlock(&s->mu);
  s->n_gathered = 0;
  return ok;
}

/* A hash of the directory `path` goes into (FNV-1a of its parent's path). */
static uint32_t dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  uint32_t h = 2166136261u;
  for (const char *c = path; slash != NULL && c < slash; c++) h = (h ^ (uint8_t)*c) * 16777619u;
  return h;
}

/*
 * Gathers file `index` (body at start, len bytes) for the writers, handed over HANDOFF at a
 * time, and before the reader reads on or waits (read_slot, settle_writers): a gathered file's
 * bytes are not in the low-water mark. False when the batch was aborted.
 */
static bool dispatch(run_job *j, uint32_t index, uint64_t start, uint64_t len) {
  session *s = j->s;
  s->gathered[s->n_gathered++] = (job){index, dir_of(j->files[index].path), start, len, false};
  return s->n_gathered < HANDOFF || hand_over(s);
}

/* True when a writer's next byte is past what was read (under mu). */
static bool writer_waits_for_bytes(session *s) {
  for (int w = 0; w < WRITERS; w++)
    if (s->writer_at[w] != UINT64_MAX && s->writer_at[w] >= s->read_to) return true;
  return false;
}

/*
 * Waits until the writers have every file of the batch done, reading on while one of them
 * needs bytes not yet read. (Not while one merely counts as starving: a writer woken by the
 * last read still does until it runs, and reading on for it would run the ring past the
 * parser, whose own position then holds the next read back.)
 */
static void settle_writers(session *s) {
  hand_over(s);
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if (s->q_len == 0 && s->busy_writers == 0) break;
    if (writer_waits_for_bytes(s) && !s->eof && !s->abort) {
      pthread_mutex_unlock(&s->mu);
      read_slot(s);
      pthread_mutex_lock(&s->mu);
      continue;
    }
    s->reader_waits = true;
    pthread_cond_wait(&s->to_reader, &s->mu);
  }
  s->reader_waits = false;
  pthread_mutex_unlock(&s->mu);
}

/* ---- the entry list, as store/local-store.ts writes it -------------------------------------- */

static void put(text *t, const void *p, size_t n) {
  if (t->failed) return;
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n) cap *= 2;
    char *d = realloc(t->data, cap);
    if (d == NULL) {
      t->failed = true;
      return;
    }
    t->data = d;
    t->cap = cap;
  }
  memcpy(t->data + t->len, p, n);
  t->len += n;
}

static void put_str(text *t, const char *s) {
  put(t, s, strlen(s));
}

static void put_int(text *t, int64_t v) {
  char b[24];
  put(t, b, (size_t)snprintf(b, sizeof b, "%lld", (long long)v));
}

/* The inside of a JSON string as JSON.stringify writes it: `"` and `\` escaped, control
 * characters as \b \t \n \f \r or \u00xx (lowercase), everything else (UTF-8) as it is. */
static void put_escaped(text *t, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(t, s + run, i - run);
    run = i + 1;
    char e[6] = {'\\', 0};
    size_t k = 2;
    switch (c) {
      case '"': e[1] = '"'; break;
      case '\\': e[1] = '\\'; break;
      case '\b': e[1] = 'b'; break;
      case '\t': e[1] = 't'; break;
      case '\n': e[1] = 'n'; break;
      case '\f': e[1] = 'f'; break;
      case '\r': e[1] = 'r'; break;
      default:
        memcpy(e + 1, "u00", 3);
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        k = 6;
    }
    put(t, e, k);
  }
  put(t, s + run, n - run);
}

static void put_json(text *t, const char *s) {
  put(t, "\"", 1);
  put_escaped(t, s, strlen(s));
  put(t, "\"", 1);
}

/*
 * A layer path as store/layer/path.ts normalizeLayerPath makes it, as a JSON string: empty
 * and `.` components dropped, the root `.`; false for what a layer cannot hold (`..`, an
 * absolute path).
 */
static bool put_layer_path(text *t, const char *raw) {
  if (raw[0] == '/') return false;
  put(t, "\"", 1);
  bool any = false;
  for (const char *p = raw; *p;) {
    const char *end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.') return false;
    if (n > 0 && !(n == 1 && p[0] == '.')) {
      if (any) put(t, "/", 1);
      put_escaped(t, p, n);
      any = true;
    }
    p += n;
    if (*p == '/') p++;
  }
  if (!any) put(t, ".", 1);
  put(t, "\"", 1);
  return true;
}

/* The records of the pax header just read: path, linkpath, size, uid, gid and mtime. */
static bool parse_pax(session *s) {
  const uint8_t *p = s->pax, *end = s->pax + s->pax_len;
  while (p < end) {
    uint64_t len = 0;
    const uint8_t *q = p;
    while (q < end && *q >= '0' && *q <= '9') {
      len = len * 10 + (uint64_t)(*q - '0');
      if (len > PAX_MAX) return false;
      q++;
    }
    if (q == p || q >= end || *q != ' ' || len > (uint64_t)(end - p) || (uint64_t)(q + 1 - p) >= len || p[len - 1] != '\n') return false;
    const uint8_t *key = q + 1, *rec_end = p + len - 1;
    const uint8_t *eq = memchr(key, '=', (size_t)(rec_end - key));
    if (eq == NULL) return false;
    size_t klen = (size_t)(eq - key), vlen = (size_t)(rec_end - eq - 1);
    const char *v = (const char *)eq + 1;
#define KEY(k) (klen == sizeof k - 1 && memcmp(key, k, klen) == 0)
    if (KEY("path") || KEY("linkpath")) {
      char **to = KEY("path") ? &s->pax_path : &s->pax_link;
      free(*to);
      if (memchr(v, 0, vlen) != NULL || (*to = malloc(vlen + 1)) == NULL) return false;
      memcpy(*to, v, vlen);
      (*to)[vlen] = 0;
    } else if (KEY("size") || KEY("uid") || KEY("gid")) {
      uint64_t n = 0;
      if (vlen == 0 || vlen > 16) return false;
      for (size_t k = 0; k < vlen; k++) {
        if (v[k] < '0' || v[k] > '9') return false;
        n = n * 10 + (uint64_t)(v[k] - '0');
      }
      if (KEY("size")) s->pax_size = n, s->pax_set |= PAX_SIZE;
      else if (KEY("uid")) s->pax_uid = n, s->pax_set |= PAX_UID;
      else s->pax_gid = n, s->pax_set |= PAX_GID;
    } else if (KEY("mtime")) {
      /* Whole seconds, the floor of a fraction (as the store's tar reader takes it). */
      size_t k = v[0] == '-' ? 1 : 0;
      int64_t n = 0;
      bool frac = false, digits = false;
      for (; k < vlen && v[k] >= '0' && v[k] <= '9'; k++, digits = true) {
        if (n > 99999999999999LL) return false;
        n = n * 10 + (v[k] - '0');
      }
      if (k < vlen && v[k] == '.')
        for (k++; k < vlen && v[k] >= '0' && v[k] <= '9'; k++) frac |= v[k] != '0';
      if (!digits || k != vlen) return false;
      s->pax_mtime = v[0] == '-' ? -n - (frac ? 1 : 0) : n;
      s->pax_set |= PAX_MTIME;
    }
#undef KEY
    p += len;
  }
  return true;
}

static uint64_t padded(uint64_t n) {
  return (BLOCK - n % BLOCK) % BLOCK;
}

/* A ustar string field (or a pax record's value) as a C string. */
static void field(char *out, const uint8_t *f, size_t n) {
  size_t k = strnlen((const char *)f, n);
  memcpy(out, f, k);
  out[k] = 0;
}

/*
 * The entry-list row of a ustar header (its pax records applied), hashed with what goes
 * before it, as store/entry-rows.ts writes it: [path, type, mode, uid, gid, mtime, size],
 * then the link target for links and devices ('' for devices), then the device numbers.
 */
static bool hash_row(session *s, const uint8_t *h, uint8_t type, const char *path, uint64_t size) {
  static const char *types[] = {"file", "hardlink", "symlink", "char", "block", "dir", "fifo"};
  uint64_t mode, uid, gid, mtime, major = 0, minor = 0;
  if (!parse_number(h + 100, 8, &mode) || !parse_number(h + 108, 8, &uid) || !parse_number(h + 116, 8, &gid) ||
      !parse_number(h + 136, 12, &mtime) || !parse_number(h + 329, 8, &major) || !parse_number(h + 337, 8, &minor))
    return false;
  text *t = &s->row;
  t->len = 0;
  put_str(t, s->rows++ == 0 ? "\n[" : ",\n[");
  if (!put_layer_path(t, path)) return false;
  put_str(t, ",\"");
  put_str(t, types[type - '0']);
  put_str(t, "\",");
  put_int(t, (int64_t)(mode & 07777));
  put(t, ",", 1);
  put_int(t, (int64_t)(s->pax_set & PAX_UID ? s->pax_uid : uid));
  put(t, ",", 1);
  put_int(t, (int64_t)(s->pax_set & PAX_GID ? s->pax_gid : gid));
  put(t, ",", 1);
  put_int(t, s->pax_set & PAX_MTIME ? s->pax_mtime : (int64_t)mtime);
  put(t, ",", 1);
  put_int(t, type == '0' ? (int64_t)size : 0);
  if (type == '1' || type == '2' || type == '3' || type == '4') {
    char link[101];
    const char *target = s->pax_link;
    if (target == NULL) {
      field(link, h + 157, 100);
      target = link;
    }
    put(t, ",", 1);
    if (type == '1') {
      if (!put_layer_path(t, target)) return false;
    } else if (type == '2') {
      put_json(t, target);
    } else {
      put_str(t, "\"\",");
      put_int(t, (int64_t)major);
      put(t, ",", 1);
      put_int(t, (int64_t)minor);
    }
  }
  put(t, "]", 1);
  if (t->failed) return false;
  sha256_update(s->rows_hash, t->data, t->len);
  return true;
}

/*
 * The ustar header block at s->pos (read: BLOCK bytes there, in one slot). A file the batch
 * wants next goes to the writers; every body is skipped by the parser (the bytes are hashed as
 * they are read). Returns false with the problem set, or when the batch was aborted.
 */
static bool take_header(run_job *j) {
  session *s = j->s;
  const uint8_t *h = at_byte(s, s->pos);
  if (all_zero(h)) {
    s->where = AT_END;
    if (s->pax_path != NULL || s->pax_link != NULL || s->pax_set) {
      set_problem(j, "the archive ends after a pax header");
      return false;
    }
    s->pos += BLOCK;
    return true;
  }
  if (memcmp(h + 257, "ustar", 5) != 0 || !checksum_ok(h)) {
    set_problem(j, "a header is damaged");
    return false;
  }
  uint8_t type = h[156];
  uint64_t size;
  if (!parse_number(h + 124, 12, &size)) {
    set_problem(j, "a header's size is not a number");
    return false;
  }
  if (type == 'x') {
    if (s->pax_path != NULL || s->pax_link != NULL || s->pax_set || size > PAX_MAX) {
      set_problem(j, "a pax header is not followed by its entry, or is too large");
      return false;
    }
    if ((s->pax = malloc(size ? size : 1)) == NULL) {
      set_problem(j, "out of memory");
      return false;
    }
    s->where = AT_PAX;
    s->pax_len = 0;
    s->pax_want = (size_t)size;
    s->pax_pad = (uint32_t)padded(size);
    s->pos += BLOCK;
    return true;
  }
  if (type < '0' || type > '6') {
    set_problem(j, "a member is of a type layers do not hold");
    return false;
  }
  if (s->pax_set & PAX_SIZE) size = s->pax_size;
  /* The path: a pax record's, else the ustar prefix (POSIX magic only: GNU's has none) and name. */
  char name[257];
  const char *path = s->pax_path;
  if (path == NULL) {
    size_t at = 0;
    if (h[345] != 0 && memcmp(h + 257, "ustar\0", 6) == 0) {
      field(name, h + 345, 155);
      at = strlen(name);
      name[at++] = '/';
    }
    field(name + at, h, 100);
    path = name;
  }
  if (!hash_row(s, h, type, path, size)) {
    set_problem(j, "an entry is not one a layer holds (its path leaves the layer, or a number is malformed)");
    return false;
  }
  bool wanted = type == '0' && j->next < j->n && strcmp(path, j->files[j->next].tar_path) == 0;
  free(s->pax_path);
  free(s->pax_link);
  s->pax_path = s->pax_link = NULL;
  s->pax_set = 0;
  uint64_t body = s->pos + BLOCK;
  if (size > UINT64_MAX / 2) {
    set_problem(j, "a header's size is too large");
    return false;
  }
  s->pos = body + size + padded(size);
  if (wanted && !dispatch(j, j->next++, body, size)) return false;
  return true;
}

/* The blob's digest, and the entry list's with its closing line. */
static void finish_digests(run_job *j) {
  sha256_hex(j->s->blob_hash, j->blob_hex);
  sha256_update(j->s->rows_hash, "\n]\n", 3);
  sha256_hex(j->s->rows_hash, j->rows_hex);
}

/*
 * Runs the batch on a thread of libuv's pool: parses on until every file of the batch has gone
 * to the writers (to the blob's end for the last batch), then waits for them.
 */
static void run_execute(napi_env env, void *data) {
  (void)env;
  run_job *j = data;
  session *s = j->s;
  pthread_mutex_lock(&s->mu);
  s->run = j;
  s->abort = false;
  pthread_mutex_unlock(&s->mu);
  bool end = false; /* the blob's end was reached */
  for (;;) {
    if (!j->last && j->next == j->n) break;
    if (s->where == AT_END) {
      /* Past the end-of-archive block: the rest is only hashed. */
      if (s->eof) {
        end = true;
        break;
      }
      if (!read_slot(s)) break;
      continue;
    }
    uint64_t need = s->where == AT_HEADER ? s->pos + BLOCK : s->pos + 1;
    if (need > s->read_to) {
      if (s->eof) {
        set_problem(j, "the archive ends in the middle of an entry");
        end = true;
        break;
      }
      if (!read_slot(s)) break;
      continue;
    }
    if (s->where == AT_PAX) {
      if (s->pax_len < s->pax_want) {
        uint64_t slot_end = (s->pos / SLOT + 1) * SLOT;
        uint64_t stop = s->read_to < slot_end ? s->read_to : slot_end;
        size_t n = s->pax_want - s->pax_len < stop - s->pos ? s->pax_want - s->pax_len : (size_t)(stop - s->pos);
        memcpy(s->pax + s->pax_len, at_byte(s, s->pos), n);
        s->pax_len += n;
        s->pos += n;
        continue;
      }
      s->pos += s->pax_pad;
      bool ok = parse_pax(s);
      free(s->pax);
      s->pax = NULL;
      s->where = AT_HEADER;
      if (!ok) {
        set_problem(j, "a pax header's records are malformed");
        break;
      }
      continue;
    }
    if (!take_header(j)) break;
  }
  settle_writers(s);
  if (j->failed >= 0 || j->syscall != NULL) return; /* a file or a read failed: told as such */
  if (j->problem[0] == 0 && end && j->next < j->n) {
    snprintf(j->problem, sizeof j->problem, "the layer does not hold %s, which the plan takes from it", j->files[j->next].tar_path);
  }
  if (j->problem[0] != 0) {
    /* Not a layer this reader can follow: hash the rest, so the caller can tell a corrupt blob. */
    s->where = AT_END;
    while (read_slot(s)) continue;
    if (j->syscall == NULL) finish_digests(j);
    return;
  }
  if (j->last) finish_digests(j);
}

/* ---- JS glue ------------------------------------------------------------------------------ */

/* Ends the writer threads (none may hold a job: no run in flight). */
static void stop_writers(session *s) {
  if (s->started > 0) {
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->has_job);
    pthread_mutex_unlock(&s->mu);
    for (int w = 0; w < s->started; w++) pthread_join(s->writers[w], NULL);
    s->started = 0;
  }
}

/* Ends the writers and frees the session. */
static void session_free(session *s) {
  if (s == NULL) return;
  stop_writers(s);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->has_job);
  pthread_cond_destroy(&s->has_data);
  pthread_cond_destroy(&s->to_reader);
  if (s->blob_hash) sha256_free(s->blob_hash);
  if (s->rows_hash) sha256_free(s->rows_hash);
  for (int i = 0; i < SLOTS; i++) free(s->slot[i]);
  free(s->row.data);
  free(s->pax);
  free(s->pax_path);
  free(s->pax_link);
  free(s);
}

/* A new session: its ring, hashes and writer threads; NULL (errno) when one cannot be made. */
static session *session_new(int blob, int root) {
  session *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->has_job, NULL);
  pthread_cond_init(&s->has_data, NULL);
  pthread_cond_init(&s->to_reader, NULL);
  s->blob = blob;
  s->root = root;
  s->umask = process_umask();
  s->where = AT_HEADER;
  for (int w = 0; w < WRITERS; w++) s->writer_at[w] = UINT64_MAX;
  bool ok = (s->blob_hash = sha256_new()) != NULL && (s->rows_hash = sha256_new()) != NULL;
  for (int i = 0; ok && i < SLOTS; i++) ok = (s->slot[i] = malloc(SLOT)) != NULL;
  /* The writers find their index by their thread id: they wait for `mu`, held until all are made. */
  pthread_mutex_lock(&s->mu);
  for (int w = 0; ok && w < WRITERS; w++) {
    int e = pthread_create(&s->writers[w], NULL, writer_main, s);
    if (e != 0) {
      errno = e;
      ok = false;
    } else {
      s->started++;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (!ok) {
    int e = errno ? errno : ENOMEM;
    session_free(s);
    errno = e;
    return NULL;
  }
  sha256_update(s->rows_hash, "[", 1);
  posix_fadvise(blob, 0, 0, POSIX_FADV_SEQUENTIAL);
  return s;
}

static void session_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  session_free(data);
}

/* Marks a session's External, so that no other object (a hash stream's) passes for one. */
static const napi_type_tag SESSION_TAG = {0x7374726174612d65ULL, 0x7874726163747331ULL};

static session *get_session(napi_env env, napi_value v) {
  return tagged_external_data(env, v, &SESSION_TAG, "not an extraction session");
}

static napi_value js_extract_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, sha256_available(), &v);
  return v;
}

static napi_value js_extract_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t blob, root;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &blob) != napi_ok ||
      napi_get_value_int32(env, argv[1], &root) != napi_ok || blob < 0 || root < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "extractOpen(blobFd, rootFd)");
    return NULL;
  }
  if (!sha256_available()) {
    napi_throw_error(env, "ERR_NATIVE_UNAVAILABLE", "extractOpen: this process has no libcrypto sha256");
    return NULL;
  }
  session *s = session_new(blob, root);
  if (s == NULL) {
    char msg[96];
    snprintf(msg, sizeof msg, "extractOpen: %s", strerror(errno));
    napi_throw_error(env, "ENOMEM", msg);
    return NULL;
  }
  napi_value v = tagged_external(env, s, session_finalize, &SESSION_TAG);
  if (v == NULL) session_free(s);
  return v;
}

static void job_free(run_job *j) {
  for (uint32_t i = 0; i < j->n; i++) {
    free(j->files[i].tar_path);
    free(j->files[i].path);
    free(j->files[i].finish.acl);
  }
  free(j->files);
  free(j->fds);
  free(j->refused);
  free(j);
}

static bool set_prop(napi_env env, napi_value obj, const char *key, napi_value v) {
  return napi_set_named_property(env, obj, key, v) == napi_ok;
}

static void run_complete(napi_env env, napi_status status, void *data) {
  run_job *j = data;
  j->s->busy = false;
  napi_value result = status == napi_ok ? batch_result(env, j->n, j->fds, j->refused, j->failed, j->err, j->syscall) : NULL, v;
  bool ok = result != NULL;
  if (ok && j->problem[0] != 0) ok = napi_create_string_utf8(env, j->problem, NAPI_AUTO_LENGTH, &v) == napi_ok && set_prop(env, result, "problem", v);
  if (ok && j->blob_hex[0] != 0) {
    ok = napi_create_string_utf8(env, j->blob_hex, 64, &v) == napi_ok && set_prop(env, result, "blob", v) &&
         napi_create_string_utf8(env, j->rows_hex, 64, &v) == napi_ok && set_prop(env, result, "rows", v);
  }
  if (ok) {
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    /* The results reach no one: close what was handed back. */
    for (uint32_t i = 0; i < j->n; i++)
      if (j->fds[i] >= 0) close(j->fds[i]);
    napi_value msg, err;
    napi_create_string_utf8(env, "extractRun did not complete", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  job_free(j);
}

/* The batch's records into j->files; false after throwing. */
static bool read_batch(napi_env env, run_job *j, const uint8_t *b, size_t len) {
  size_t at = 0;
  for (uint32_t i = 0; i < j->n; i++) {
    if (len - at < 40) goto bad;
    const uint8_t *r = b + at;
    uint32_t tl = read_le32(r), pl = read_le32(r + 4);
    wanted_file *w = &j->files[i];
    at += 40;
    if (tl == 0 || pl == 0 || len - at < (size_t)tl + pl || !finish_read(r + 8, &w->finish)) goto bad;
    if ((w->tar_path = copy_cstring(b + at, tl)) == NULL || (w->path = copy_cstring(b + at + tl, pl)) == NULL) goto bad;
    at += (size_t)tl + pl;
    if (!finish_read_acl(b + at, len - at, &w->finish)) goto bad;
    at += w->finish.acl_len;
    j->fds[i] = FD_NOT_REACHED;
  }
  if (at == len) return true;
bad:
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "extractRun: the batch is not count records of files");
  return false;
}

static napi_value js_extract_run(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  uint32_t count;
  bool last = false, is_buffer = false;
  void *bytes = NULL;
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "extractRun(session, batch, count, last)");
    return NULL;
  }
  session *s = get_session(env, argv[0]);
  if (s == NULL) return NULL;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[1], &bytes, &len) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &count) != napi_ok || napi_get_value_bool(env, argv[3], &last) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "extractRun(session, batch: Buffer, count: number, last: boolean)");
    return NULL;
  }
  if (s->busy) {
    napi_throw_error(env, "ERR_INVALID_STATE", "extractRun: the session's last run has not completed");
    return NULL;
  }
  run_job *j = calloc(1, sizeof *j);
  size_t k = count ? count : 1;
  if (j == NULL || (j->files = calloc(k, sizeof *j->files)) == NULL || (j->fds = calloc(k, sizeof *j->fds)) == NULL ||
      (j->refused = calloc(k, 1)) == NULL) {
    if (j) j->n = 0;
    if (j) job_free(j);
    napi_throw_error(env, "ENOMEM", "extractRun: out of memory");
    return NULL;
  }
  j->n = count;
  j->s = s;
  j->last = last;
  j->failed = -1;
  if (!read_batch(env, j, bytes, len)) {
    job_free(j);
    return NULL;
  }
  napi_value promise = queue_job(env, "extractRun", run_execute, run_complete, j, &j->work, &j->deferred);
  if (promise == NULL) {
    job_free(j);
    return NULL;
  }
  s->busy = true;
  return promise;
}

static napi_value js_extract_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  session *s = get_session(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->busy) {
    napi_throw_error(env, "ERR_INVALID_STATE", "extractClose: a run of the session has not completed");
    return NULL;
  }
  /* The writer threads end now; the External's finalizer frees the rest. */
  stop_writers(s);
  return NULL;
}

napi_status extract_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"extractAvailable", NULL, js_extract_available, NULL, NULL, NULL, napi_enumerable, NULL},
      {"extractOpen", NULL, js_extract_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"extractRun", NULL, js_extract_run, NULL, NULL, NULL, napi_enumerable, NULL},
      {"extractClose", NULL, js_extract_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

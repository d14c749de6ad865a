/*
 * auth: the users table (a pure parser) and password checks on the thread
 * pool.  See auth.h for the contract.
 *
 * Owns: the current table, every struct auth_req until it is freed (from
 * its timer's close callback), and the struct auth itself, which outlives
 * auth_free() until the last request is gone.  Never: hashes on the loop
 * thread, logs a password, or lets a worker touch loop state (workers read
 * their request's copies and write its result fields, plus two atomic
 * counters in struct auth).
 *
 * A request's life: WAITING (in the FIFO) -> RUNNING (on the pool) ->
 * DELAY (failure timer) or answered at once; any of these -> answered by
 * auth_cancel()/auth_free().  Once answered, req->cb is NULL and the
 * request is freed as soon as its hash is no longer running on the pool.
 */
#include "relay/auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define DEFAULT_MAX_RUNNING 2
#define DEFAULT_MAX_WAITING 64
#define DEFAULT_FAIL_DELAY_MS 1000

/* A yescrypt hash of a random password nobody knows: the dummy of an
 * empty table, so an unknown user still costs one yescrypt hash. */
static const char builtin_dummy[] =
    "$y$j9T$GCzPWNYm5qYkDvIT4Qx8//"
    "$wfnbJIpTeGrFFf02IIA8WboSrnwDg1qbSnOrT1NOauC";

const char *auth_status_name(enum auth_status st) {
  switch (st) {
  case AUTH_OK:
    return "ok";
  case AUTH_FAILED:
    return "failed";
  case AUTH_TEMPFAIL:
    return "tempfail";
  case AUTH_CANCELED:
    return "canceled";
  }
  return "?";
}

/* ---- the users table ------------------------------------------------- */

struct auth_entry {
  const char *user; /* into strings */
  const char *hash; /* into strings */
};

struct auth_table {
  size_t n;
  struct auth_entry *e;
  uint32_t *index; /* open addressing: entry number + 1, 0 = empty */
  size_t mask;
  const char *dummy;
  char *strings; /* a NUL-separated copy of the file's users and hashes */
};

static uint32_t hash_name(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* The slot of user, or of the empty slot where it would go. */
static size_t table_slot(const struct auth_table *t, const char *user) {
  size_t i = hash_name(user) & t->mask;
  while (t->index[i] && strcmp(t->e[t->index[i] - 1].user, user) != 0)
    i = (i + 1) & t->mask;
  return i;
}

void auth_table_free(struct auth_table *t) {
  if (!t)
    return;
  free(t->e);
  free(t->index);
  free(t->strings);
  free(t);
}

size_t auth_table_count(const struct auth_table *t) {
  return t ? t->n : 0;
}

const char *auth_table_hash(const struct auth_table *t, const char *user) {
  if (!t || !user || strlen(user) > AUTH_USER_MAX)
    return NULL;
  size_t i = table_slot(t, user);
  return t->index[i] ? t->e[t->index[i] - 1].hash : NULL;
}

const char *auth_table_dummy(const struct auth_table *t) {
  return t && t->dummy ? t->dummy : builtin_dummy;
}

/* The method prefix of a hash: "$y$", "$2b$", ... (length, 0 if none). */
static size_t method_len(const char *hash) {
  if (hash[0] != '$')
    return 0;
  const char *end = strchr(hash + 1, '$');
  return end ? (size_t)(end - hash) + 1 : 0;
}

/*
 * The length of the part after the last '$' for the methods whose output
 * we know (for bcrypt it holds salt and checksum); 0: unknown, not
 * checked.  Catches a bare salt or a truncated paste, which would
 * otherwise just never match.
 */
static size_t checksum_len(const char *hash) {
  static const struct {
    const char *prefix;
    size_t len;
  } known[] = {
      {"$y$", 43}, {"$gy$", 43}, {"$7$", 43},  {"$6$", 86},
      {"$5$", 43}, {"$2b$", 53}, {"$2a$", 53}, {"$2y$", 53},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strncmp(hash, known[i].prefix, strlen(known[i].prefix)) == 0)
      return known[i].len;
  return 0;
}

/* NULL if hash is acceptable, else why not. */
static const char *check_hash(const char *hash) {
  size_t len = strlen(hash);
  if (len == 0)
    return "empty password hash";
  if (len >= CRYPT_OUTPUT_SIZE)
    return "password hash too long";
  switch (crypt_checksalt(hash)) {
  case CRYPT_SALT_OK:
    break;
  case CRYPT_SALT_METHOD_LEGACY:
    /* Any two salt characters make a DES "setting": tell plain text
     * from a real 13-character DES hash. */
    if (hash[0] != '$' && hash[0] != '_' && len != 13)
      return "unsupported or invalid password hash";
    return "legacy password hash method (use $y$ or $6$)";
  case CRYPT_SALT_METHOD_DISABLED:
    return "password hash method disabled in libcrypt";
  default:
    return "unsupported or invalid password hash";
  }
  size_t want = checksum_len(hash);
  if (want) {
    if (strlen(strrchr(hash, '$') + 1) != want)
      return "password hash is truncated or only a salt";
  }
  return NULL;
}

static int parse_fail(char *err, size_t errlen, const char *name, unsigned line,
                      const char *msg) {
  if (err && errlen)
    snprintf(err, errlen, "%s:%u: %s", name, line, msg);
  return -EINVAL;
}

/* The dummy: the first hash of the most used method. */
static const char *pick_dummy(const struct auth_table *t) {
  const char *best = NULL;
  size_t best_n = 0;
  for (size_t i = 0; i < t->n; i++) {
    size_t ml = method_len(t->e[i].hash), n = 0;
    for (size_t j = 0; j < t->n; j++)
      if (method_len(t->e[j].hash) == ml &&
          strncmp(t->e[i].hash, t->e[j].hash, ml) == 0)
        n++;
    if (n > best_n) {
      best_n = n;
      best = t->e[i].hash;
    }
    /* A majority cannot be beaten; spares the quadratic scan. */
    if (best_n * 2 > t->n)
      break;
  }
  return best;
}

/* Parses one non-blank, non-comment line s (NUL-terminated, in
 * t->strings) into t. */
static int parse_line(struct auth_table *t, char *s, const char *name,
                      unsigned line, char *err, size_t errlen) {
  char *colon = strchr(s, ':');
  if (!colon)
    return parse_fail(err, errlen, name, line, "expected user:hash");
  *colon = '\0';
  const char *user = s, *hash = colon + 1;
  if (*user == '\0')
    return parse_fail(err, errlen, name, line, "empty user name");
  if (strlen(user) > AUTH_USER_MAX)
    return parse_fail(err, errlen, name, line, "user name too long");
  int bad_char = 0;
  for (const char *c = user; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f)
      bad_char = 1;
  if (bad_char)
    return parse_fail(err, errlen, name, line,
                      "control character in user name");
  const char *why = check_hash(hash);
  if (why)
    return parse_fail(err, errlen, name, line, why);
  size_t slot = table_slot(t, user);
  if (t->index[slot]) {
    char msg[AUTH_USER_MAX + 64];
    snprintf(msg, sizeof msg, "duplicate user \"%s\"", user);
    return parse_fail(err, errlen, name, line, msg);
  }
  t->e[t->n].user = user;
  t->e[t->n].hash = hash;
  t->n++;
  t->index[slot] = (uint32_t)t->n;
  return 0;
}

int auth_parse_users(const char *text, size_t len, const char *name,
                     struct auth_table **out, char *err, size_t errlen) {
  if (!name)
    name = "users file";
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    if (text[i] == '\n')
      lines++;

  struct auth_table *t = calloc(1, sizeof *t);
  size_t cap = 8;
  while (cap < lines * 2)
    cap *= 2;
  if (t) {
    t->strings = malloc(len + 1);
    t->e = calloc(lines, sizeof *t->e);
    t->index = calloc(cap, sizeof *t->index);
    t->mask = cap - 1;
  }
  if (!t || !t->strings || !t->e || !t->index) {
    auth_table_free(t);
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", name);
    return -ENOMEM;
  }
  if (len)
    memcpy(t->strings, text, len);
  t->strings[len] = '\0';

  char *p = t->strings, *end = t->strings + len;
  int rc = 0;
  for (unsigned line = 1;; line++) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
      eol = end;
    char *next = eol < end ? eol + 1 : NULL;
    /* Trailing blanks (and the CR of CRLF) are not part of the hash. */
    char *q = eol;
    while (q > p && (q[-1] == '\r' || q[-1] == ' ' || q[-1] == '\t'))
      q--;
    *q = '\0';
    if (memchr(p, '\0', (size_t)(q - p))) {
      rc = parse_fail(err, errlen, name, line, "NUL byte in line");
      break;
    }
    char *s = p;
    while (*s == ' ' || *s == '\t')
      s++;
    p = next;
    if (*s != '\0' && *s != '#') {
      rc = parse_line(t, s, name, line, err, errlen);
      if (rc < 0)
        break;
    }
    if (!p)
      break;
  }

  if (rc < 0) {
    auth_table_free(t);
    return rc;
  }
  t->dummy = pick_dummy(t);
  *out = t;
  return 0;
}

/* ---- loading --------------------------------------------------------- */

static int load_file(const char *path, struct auth_table **out, char *err,
                     size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
    return -e;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
    return -e;
  }
  if (st.st_size > AUTH_FILE_MAX) {
    close(fd);
    snprintf(err, errlen, "%s: too large (over %d bytes)", path, AUTH_FILE_MAX);
    return -EFBIG;
  }
  /* Read to EOF whatever fstat said, within the ceiling. */
  size_t cap = (size_t)st.st_size + 1, len = 0;
  char *buf = malloc(cap);
  int rc = 0;
  while (buf) {
    if (len == cap) {
      if (cap > AUTH_FILE_MAX) {
        rc = -EFBIG;
        snprintf(err, errlen, "%s: too large (over %d bytes)", path,
                 AUTH_FILE_MAX);
        break;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb)
        break;
      buf = nb;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
      break;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  if (!buf || (rc == 0 && len == cap)) {
    free(buf);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  if (rc == 0)
    rc = auth_parse_users(buf, len, path, out, err, errlen);
  free(buf);
  return rc;
}

/* ---- the checker ----------------------------------------------------- */

enum req_state { REQ_WAITING, REQ_RUNNING, REQ_DELAY, REQ_DONE };

struct auth_req {
  struct auth *a;
  struct auth_req *prev, *next; /* in a->waiting or a->active */
  enum req_state state;
  int answered; /* the callback has run (or will never run) */
  int closing;  /* uv_close(&timer) called */
  int in_pool;  /* work submitted, after-work not yet run */
  auth_cb cb;
  void *data;
  uv_work_t work;
  uv_timer_t timer;
  char *user;
  char *pass; /* wiped as soon as hashed */
  size_t pass_len;
  int pass_too_long;
  /* Written by the worker, read in after-work. */
  int known;
  int match;
  int crypt_ran;
  int crypt_err;
  char hash[CRYPT_OUTPUT_SIZE]; /* the user's (or the dummy) hash */
};

struct req_list {
  struct auth_req *head, *tail;
  int n;
};

struct auth {
  uv_loop_t *loop;
  char *path;
  struct auth_table *table;
  struct auth_limits lim;
  struct req_list waiting; /* FIFO, not started */
  struct req_list active;  /* running or delaying, not answered */
  int running;             /* works submitted to the pool */
  int live;                /* requests allocated */
  int closing;
  struct auth_stats st;
  atomic_int in_crypt;
  atomic_int max_in_crypt;
};

static void list_push(struct req_list *l, struct auth_req *r) {
  r->next = NULL;
  r->prev = l->tail;
  if (l->tail)
    l->tail->next = r;
  else
    l->head = r;
  l->tail = r;
  l->n++;
}

static void list_remove(struct req_list *l, struct auth_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    l->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    l->tail = r->prev;
  r->prev = r->next = NULL;
  l->n--;
}

static void auth_destroy(struct auth *a) {
  auth_table_free(a->table);
  free(a->path);
  free(a);
}

static void req_wipe(struct auth_req *r) {
  if (r->pass) {
    explicit_bzero(r->pass, r->pass_len);
    free(r->pass);
    r->pass = NULL;
  }
}

static void on_req_close(uv_handle_t *h) {
  struct auth_req *r = h->data;
  struct auth *a = r->a;
  req_wipe(r);
  free(r->user);
  explicit_bzero(r, sizeof *r);
  free(r);
  a->live--;
  if (a->closing && a->live == 0)
    auth_destroy(a);
}

/* Frees r once it is answered and off the pool (memory goes in the close
 * callback). */
static void req_release(struct auth_req *r) {
  if (!r->answered || r->in_pool || r->closing)
    return;
  r->closing = 1;
  uv_close((uv_handle_t *)&r->timer, on_req_close);
}

/* Runs r's callback once, last thing: r may be freed and the caller must
 * not touch r (or, unless it holds another live request, a) afterwards. */
static void req_answer(struct auth_req *r, enum auth_status st) {
  struct auth *a = r->a;
  auth_cb cb = r->cb;
  void *data = r->data;
  r->answered = 1;
  r->cb = NULL;
  r->state = REQ_DONE;
  switch (st) {
  case AUTH_OK:
    a->st.ok++;
    break;
  case AUTH_FAILED:
    a->st.failed++;
    break;
  case AUTH_TEMPFAIL:
    a->st.tempfail++;
    break;
  case AUTH_CANCELED:
    a->st.canceled++;
    break;
  }
  /* The close callback runs on a later loop turn, so r->user stays valid
   * during the callback below. */
  req_release(r);
  cb(r, st, r->user, data);
}

static void on_work(uv_work_t *w) {
  struct auth_req *r = w->data;
  struct auth *a = r->a;
  struct crypt_data *cd = calloc(1, sizeof *cd);
  if (!cd) {
    r->crypt_err = ENOMEM;
    req_wipe(r);
    return;
  }
  int now = atomic_fetch_add(&a->in_crypt, 1) + 1;
  int seen = atomic_load(&a->max_in_crypt);
  while (now > seen &&
         !atomic_compare_exchange_weak(&a->max_in_crypt, &seen, now))
    ;
  errno = 0;
  char *out = crypt_rn(r->pass, r->hash, cd, sizeof *cd);
  int e = errno;
  atomic_fetch_sub(&a->in_crypt, 1);
  r->crypt_ran = 1;
  req_wipe(r);
  if (!out) {
    r->crypt_err = e ? e : EINVAL;
  } else {
    /* Both buffers are CRYPT_OUTPUT_SIZE long, so comparing hash_len
     * bytes stays inside them whatever out's length. */
    size_t hash_len = strlen(r->hash);
    int same = strlen(out) == hash_len;
    same &= CRYPTO_memcmp(out, r->hash, hash_len) == 0;
    r->match = same && r->known;
  }
  explicit_bzero(cd, sizeof *cd);
  free(cd);
}

static void on_delay(uv_timer_t *t) {
  struct auth_req *r = t->data;
  list_remove(&r->a->active, r);
  req_answer(r, AUTH_FAILED);
}

static void start_delay(struct auth_req *r) {
  r->state = REQ_DELAY;
  uv_timer_start(&r->timer, on_delay, r->a->lim.fail_delay_ms, 0);
}

static void on_after_work(uv_work_t *w, int status);

/* Starts r's hash (or its failure delay).  Returns 0 or uv_queue_work's
 * error, with r untouched (still unlisted). */
static int req_start(struct auth_req *r) {
  struct auth *a = r->a;
  const char *h = auth_table_hash(a->table, r->user);
  r->known = h != NULL;
  if (!h)
    h = auth_table_dummy(a->table);
  snprintf(r->hash, sizeof r->hash, "%s", h);
  if (r->pass_too_long) {
    /* Not worth hashing, but answered no faster than a wrong one. */
    req_wipe(r);
    list_push(&a->active, r);
    start_delay(r);
    return 0;
  }
  r->work.data = r;
  int rc = uv_queue_work(a->loop, &r->work, on_work, on_after_work);
  if (rc < 0)
    return rc;
  r->in_pool = 1;
  r->state = REQ_RUNNING;
  list_push(&a->active, r);
  a->running++;
  if (a->running > a->st.max_running_hw)
    a->st.max_running_hw = a->running;
  return 0;
}

/* Starts waiting checks while there is room.  May run callbacks (a start
 * that fails is a temporary failure). */
static void pump(struct auth *a) {
  while (!a->closing && a->running < a->lim.max_running && a->waiting.head) {
    struct auth_req *r = a->waiting.head;
    list_remove(&a->waiting, r);
    if (req_start(r) < 0) {
      log_msg(LOG_WARN, "auth", "cannot start a password check");
      req_answer(r, AUTH_TEMPFAIL);
    }
  }
}

static void on_after_work(uv_work_t *w, int status) {
  struct auth_req *r = w->data;
  struct auth *a = r->a;
  a->running--;
  r->in_pool = 0;
  if (r->crypt_ran)
    a->st.crypt_calls++;
  req_wipe(r); /* if uv_cancel() withdrew it before it ran */

  if (r->answered) {
    /* Canceled while on the pool: the result goes nowhere. */
    req_release(r);
    pump(a);
    return;
  }
  /* r stays live (at worst closing) until the end, so a outlives any
   * callback pump() runs, even one that calls auth_free(). */
  pump(a);
  if (r->answered)
    return; /* canceled from one of those callbacks */
  if (status < 0 || r->crypt_err) {
    log_msg(LOG_WARN, "auth", "password check failed to run: %s",
            status < 0 ? uv_strerror(status) : strerror(r->crypt_err));
    list_remove(&a->active, r);
    req_answer(r, AUTH_TEMPFAIL);
  } else if (r->match) {
    list_remove(&a->active, r);
    req_answer(r, AUTH_OK);
  } else {
    start_delay(r);
  }
}

static void fill_limits(struct auth_limits *dst, const struct auth_limits *l) {
  dst->max_running =
      l && l->max_running > 0 ? l->max_running : DEFAULT_MAX_RUNNING;
  dst->max_waiting =
      l && l->max_waiting > 0 ? l->max_waiting : DEFAULT_MAX_WAITING;
  dst->fail_delay_ms =
      l && l->fail_delay_ms > 0 ? l->fail_delay_ms : DEFAULT_FAIL_DELAY_MS;
}

struct auth *auth_new(uv_loop_t *loop, const char *path, char *err,
                      size_t errlen) {
  struct auth *a = calloc(1, sizeof *a);
  if (!a || !(a->path = strdup(path))) {
    free(a);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->loop = loop;
  fill_limits(&a->lim, NULL);
  atomic_init(&a->in_crypt, 0);
  atomic_init(&a->max_in_crypt, 0);
  if (load_file(path, &a->table, err, errlen) < 0) {
    auth_destroy(a);
    return NULL;
  }
  return a;
}

void auth_set_limits(struct auth *a, const struct auth_limits *l) {
  fill_limits(&a->lim, l);
  pump(a);
}

int auth_reload(struct auth *a, char *err, size_t errlen) {
  struct auth_table *t = NULL;
  int rc = load_file(a->path, &t, err, errlen);
  if (rc < 0)
    return rc;
  /* Running hashes work on their own copies; the old table can go. */
  auth_table_free(a->table);
  a->table = t;
  return 0;
}

size_t auth_user_count(const struct auth *a) {
  return auth_table_count(a->table);
}

int auth_check(struct auth *a, const char *user, const char *pass, auth_cb cb,
               void *data, struct auth_req **reqp) {
  if (!a || !user || !pass || !cb)
    return UV_EINVAL;
  if (a->closing)
    return UV_ECANCELED;
  int room = a->running < a->lim.max_running && !a->waiting.head;
  if (!room && a->waiting.n >= a->lim.max_waiting) {
    a->st.busy++;
    return UV_EBUSY;
  }
  struct auth_req *r = calloc(1, sizeof *r);
  if (!r)
    return UV_ENOMEM;
  r->a = a;
  r->cb = cb;
  r->data = data;
  r->user = strdup(user);
  r->pass_len = strlen(pass);
  r->pass_too_long = r->pass_len > AUTH_PASS_MAX;
  if (!r->pass_too_long) {
    r->pass = malloc(r->pass_len + 1);
    if (r->pass)
      memcpy(r->pass, pass, r->pass_len + 1);
  }
  if (!r->user || (!r->pass_too_long && !r->pass)) {
    req_wipe(r);
    free(r->user);
    free(r);
    return UV_ENOMEM;
  }
  uv_timer_init(a->loop, &r->timer);
  r->timer.data = r;
  a->live++;
  if (room) {
    int rc = req_start(r);
    if (rc < 0) {
      r->answered = 1; /* the callback never runs */
      req_release(r);
      return rc;
    }
  } else {
    r->state = REQ_WAITING;
    list_push(&a->waiting, r);
  }
  a->st.checks++;
  if (reqp)
    *reqp = r;
  return 0;
}

void auth_cancel(struct auth_req *r) {
  if (!r || r->answered)
    return;
  struct auth *a = r->a;
  switch (r->state) {
  case REQ_WAITING:
    list_remove(&a->waiting, r);
    break;
  case REQ_RUNNING:
    /* Withdraws it if the pool has not picked it up yet; otherwise the
     * hash finishes and on_after_work throws the result away. */
    uv_cancel((uv_req_t *)&r->work);
    list_remove(&a->active, r);
    break;
  case REQ_DELAY:
    uv_timer_stop(&r->timer);
    list_remove(&a->active, r);
    break;
  case REQ_DONE:
    return;
  }
  req_answer(r, AUTH_CANCELED);
}

void auth_free(struct auth *a) {
  if (!a || a->closing)
    return;
  a->closing = 1;
  /* Each callback may cancel or end other requests; take one at a time
   * from the lists rather than walking them. */
  while (a->waiting.head)
    auth_cancel(a->waiting.head);
  while (a->active.head)
    auth_cancel(a->active.head);
  if (a->live == 0)
    auth_destroy(a);
}

void auth_get_stats(const struct auth *a, struct auth_stats *out) {
  *out = a->st;
  out->running = a->running;
  out->waiting = a->waiting.n;
  out->max_in_crypt = atomic_load(&((struct auth *)a)->max_in_crypt);
}

/* test_outbound_outcome: the pure outcome function of outbound (what each
 * recipient becomes after an attempt), table-driven. */
#include "relay/outbound/outcome.h"

#include "check.h"

/* 1m, 5m, 15m; lifetime 1 h */
static const uint64_t sched_ms[] = {60000, 300000, 900000};
static const struct outcome_policy pol = {
    .retry_schedule_ms = sched_ms,
    .n_retry_schedule = 3,
    .queue_lifetime_ms = 3600000,
};

#define RECEIVED 1700000000 /* unix s */
#define T0 ((int64_t)RECEIVED * 1000)
/* The arrival's second ends: deadlines count from here (sched_arrival_ms),
 * so that they are never early. */
#define END (T0 + 999)

#define NONE (-1) /* no store outcome for the recipient */

struct row {
  const char *name;
  /* input */
  enum outcome_state state;
  int attempts;
  unsigned notify;
  const char *sender;
  int removed;
  int64_t now_ms;
  const char *status;
  /* expected */
  int store_state; /* enum store_rcpt_state or NONE */
  int store_attempts;
  int64_t store_next_s;
  enum sched_outcome sched;
  int sched_attempts;
  int64_t sched_retry_at;
  int dsn; /* 1: in the bounce */
  const char *dsn_status;
  enum outcome_event event;
};

static const struct row rows[] = {
    {"delivered", OUTCOME_DELIVERED, 0, 0, "s@a.example", 0, T0 + 5000, "2.0.0",
     STORE_RCPT_DELIVERED, 1, 0, SCHED_FINAL, 0, 0, 0, NULL,
     OUTCOME_EV_DELIVERED},
    {"first tempfail defers 1m", OUTCOME_TEMPFAIL, 0, 0, "s@a.example", 0,
     T0 + 5000, "4.2.0", STORE_RCPT_DEFERRED, 1, RECEIVED + 65, SCHED_RETRY, 1,
     T0 + 65000, 0, NULL, OUTCOME_EV_DEFERRED},
    {"third tempfail defers 15m", OUTCOME_TEMPFAIL, 2, 0, "s@a.example", 0,
     T0 + 600000, "4.2.0", STORE_RCPT_DEFERRED, 3, RECEIVED + 1500, SCHED_RETRY,
     3, T0 + 1500000, 0, NULL, OUTCOME_EV_DEFERRED},
    {"tempfail 1 ms before expiry: clamped to the expiry", OUTCOME_TEMPFAIL, 5,
     0, "s@a.example", 0, END + 3599999, "4.2.0", STORE_RCPT_DEFERRED, 6,
     RECEIVED + 3601, SCHED_RETRY, 6, END + 3600000, 0, NULL,
     OUTCOME_EV_DEFERRED},
    {"tempfail at the expiry boundary bounces 4.4.7", OUTCOME_TEMPFAIL, 5, 0,
     "s@a.example", 0, END + 3600000, "4.2.0", STORE_RCPT_BOUNCED, 6, 0,
     SCHED_FINAL, 0, 0, 1, "4.4.7", OUTCOME_EV_EXPIRED},
    {"expiry of a bounce (null sender): no bounce of a bounce",
     OUTCOME_TEMPFAIL, 5, 0, "", 0, T0 + 4000000, "4.2.0", STORE_RCPT_BOUNCED,
     6, 0, SCHED_FINAL, 0, 0, 0, NULL, OUTCOME_EV_EXPIRED},
    {"permfail bounces", OUTCOME_PERMFAIL, 1, 0, "s@a.example", 0, T0 + 5000,
     "5.1.1", STORE_RCPT_BOUNCED, 2, 0, SCHED_FINAL, 0, 0, 1, "5.1.1",
     OUTCOME_EV_BOUNCED},
    {"permfail without a status: 5.0.0", OUTCOME_PERMFAIL, 0, 0, "s@a.example",
     0, T0 + 5000, "", STORE_RCPT_BOUNCED, 1, 0, SCHED_FINAL, 0, 0, 1, "5.0.0",
     OUTCOME_EV_BOUNCED},
    {"permfail NOTIFY=NEVER", OUTCOME_PERMFAIL, 0, DSN_NOTIFY_NEVER,
     "s@a.example", 0, T0 + 5000, "5.1.1", STORE_RCPT_BOUNCED, 1, 0,
     SCHED_FINAL, 0, 0, 0, NULL, OUTCOME_EV_BOUNCED},
    {"permfail NOTIFY=DELAY only", OUTCOME_PERMFAIL, 0, DSN_NOTIFY_DELAY,
     "s@a.example", 0, T0 + 5000, "5.1.1", STORE_RCPT_BOUNCED, 1, 0,
     SCHED_FINAL, 0, 0, 0, NULL, OUTCOME_EV_BOUNCED},
    {"permfail of a bounce (null sender)", OUTCOME_PERMFAIL, 0, 0, "", 0,
     T0 + 5000, "5.1.1", STORE_RCPT_BOUNCED, 1, 0, SCHED_FINAL, 0, 0, 0, NULL,
     OUTCOME_EV_BOUNCED},
    {"left for a further transaction after 452: unchanged, due now",
     OUTCOME_NEXT_TX, 0, 0, "s@a.example", 0, T0 + 5000, "", STORE_RCPT_QUEUED,
     0, RECEIVED + 5, SCHED_RETRY, 0, T0 + 5000, 0, NULL, OUTCOME_EV_NONE},
    {"not tried, deferred before: stays deferred", OUTCOME_PENDING, 3, 0,
     "s@a.example", 0, T0 + 5000, "", STORE_RCPT_DEFERRED, 3, RECEIVED + 5,
     SCHED_RETRY, 3, T0 + 5000, 0, NULL, OUTCOME_EV_NONE},
    {"already final in the store: nothing written", OUTCOME_FINAL, 2, 0,
     "s@a.example", 0, T0 + 5000, "", NONE, 0, 0, SCHED_FINAL, 0, 0, 0, NULL,
     OUTCOME_EV_NONE},
    {"removed while in flight: a refused recipient never bounces",
     OUTCOME_PERMFAIL, 0, 0, "s@a.example", 1, T0 + 5000, "5.1.1", NONE, 0, 0,
     SCHED_FINAL, 0, 0, 0, NULL, OUTCOME_EV_NONE},
    {"removed while in flight: an expiring recipient never bounces",
     OUTCOME_TEMPFAIL, 5, 0, "s@a.example", 1, END + 3600000, "4.2.0", NONE, 0,
     0, SCHED_FINAL, 0, 0, 0, NULL, OUTCOME_EV_NONE},
    {"removed while in flight: a deferral is not written", OUTCOME_TEMPFAIL, 0,
     0, "s@a.example", 1, T0 + 5000, "4.2.0", NONE, 0, 0, SCHED_FINAL, 0, 0, 0,
     NULL, OUTCOME_EV_NONE},
    {"removed while in flight: a delivery is still logged", OUTCOME_DELIVERED,
     0, 0, "s@a.example", 1, T0 + 5000, "2.0.0", NONE, 0, 0, SCHED_FINAL, 0, 0,
     0, NULL, OUTCOME_EV_DELIVERED},
};

static void check_row(const struct row *t) {
  struct outcome_rcpt in = {
      .idx = 3,
      .attempts = t->attempts,
      .addr = "r@b.example",
      .notify = t->notify,
      .state = t->state,
      .err = "the reply",
      .status = t->status,
      .remote = "mx.b.example[192.0.2.1]:25",
  };
  struct outcome_msg m = {.id = "Q1",
                          .sender = t->sender,
                          .received_at = RECEIVED,
                          .removed = t->removed};
  struct store_outcome so[1];
  struct sched_result sr[1];
  struct dsn_rcpt dr[1];
  struct outcome_note notes[1];
  struct outcome_out out = {
      .store = so, .sched = sr, .dsn = dr, .notes = notes};
  outcome_decide(&m, &in, 1, &pol, t->now_ms, &out);
  fprintf(stderr, "- %s\n", t->name);
  if (t->store_state == NONE) {
    CHECK_INT(out.nstore, 0);
  } else {
    CHECK_INT(out.nstore, 1);
    CHECK_STR(so[0].id, "Q1");
    CHECK_INT(so[0].idx, 3);
    CHECK_INT(so[0].state, t->store_state);
    CHECK_INT(so[0].attempts, t->store_attempts);
    if (t->store_state == STORE_RCPT_DEFERRED ||
        t->store_state == STORE_RCPT_QUEUED)
      CHECK_INT(so[0].next_attempt_at, t->store_next_s);
  }
  CHECK_INT(out.nsched, 1);
  CHECK_INT(sr[0].idx, 3);
  CHECK_INT(sr[0].outcome, t->sched);
  if (t->sched == SCHED_RETRY) {
    CHECK_INT(sr[0].attempts, t->sched_attempts);
    CHECK_INT(sr[0].retry_at, t->sched_retry_at);
  }
  CHECK_INT(out.ndsn, t->dsn);
  if (t->dsn && out.ndsn) {
    CHECK_STR(dr[0].status, t->dsn_status);
    CHECK_STR(dr[0].addr, "r@b.example");
    CHECK_STR(dr[0].remote_mta, "mx.b.example[192.0.2.1]:25");
    CHECK_CONTAINS(dr[0].diag, "the reply");
    CHECK_INT(dr[0].last_attempt, t->now_ms / 1000);
  }
  CHECK_INT(notes[0].event, t->event);
  if (t->event == OUTCOME_EV_EXPIRED) {
    CHECK_STR(notes[0].status, "4.4.7");
    CHECK_CONTAINS(notes[0].err, "expired after 3600s");
    CHECK_CONTAINS(notes[0].err, "last error: the reply");
    CHECK_CONTAINS(so[0].last_error, "expired after 3600s");
  }
}

/* Several recipients: the bounce lists exactly the failed ones, in order;
 * every recipient gets a scheduler result. */
static void test_mixed(void) {
  struct outcome_rcpt in[4] = {
      {.idx = 0,
       .addr = "a@b.example",
       .state = OUTCOME_DELIVERED,
       .err = "250 ok",
       .status = "2.0.0",
       .remote = "h"},
      {.idx = 1,
       .addr = "b@b.example",
       .state = OUTCOME_PERMFAIL,
       .err = "550 no",
       .status = "5.1.1",
       .remote = "h"},
      {.idx = 2,
       .addr = "c@b.example",
       .state = OUTCOME_TEMPFAIL,
       .err = "450 later",
       .status = "4.2.0",
       .remote = "h"},
      {.idx = 5,
       .addr = "d@b.example",
       .state = OUTCOME_PERMFAIL,
       .err = "552 full",
       .status = "5.2.2",
       .remote = ""},
  };
  struct outcome_msg m = {
      .id = "Q2", .sender = "s@a.example", .received_at = RECEIVED};
  struct store_outcome so[4];
  struct sched_result sr[4];
  struct dsn_rcpt dr[4];
  struct outcome_note notes[4];
  struct outcome_out out = {
      .store = so, .sched = sr, .dsn = dr, .notes = notes};
  outcome_decide(&m, in, 4, &pol, T0 + 1000, &out);
  CHECK_INT(out.nstore, 4);
  CHECK_INT(out.nsched, 4);
  CHECK_INT(out.ndsn, 2);
  CHECK_STR(dr[0].addr, "b@b.example");
  CHECK_STR(dr[1].addr, "d@b.example");
  CHECK(dr[1].remote_mta == NULL);
  CHECK_INT(sr[3].idx, 5);
  CHECK_INT(sr[2].outcome, SCHED_RETRY);
}

/* A relayhost refusing this relay (to MAIL or RCPT) defers. */
static void test_relay_refusal(void) {
  static const struct {
    int code;
    const char *esc;
    int refusal;
  } t[] = {
      {530, "5.7.0", 1},  {530, "", 1},       {530, NULL, 1},
      {550, "5.7.0", 1},  {554, "5.7.1", 1},  {535, "5.7.8", 1},
      {550, "5.7.9", 1},  {538, "5.7.11", 1}, {550, "5.7.14", 1},
      {550, "5.7.57", 1}, {550, "5.1.1", 0},  {550, "5.7.2", 0},
      {550, "5.7.5", 0},  {550, "5.7.10", 0}, {550, "5.7.570", 0},
      {550, "", 0},       {550, NULL, 0},     {451, "4.7.1", 0},
      {250, "2.1.0", 0},  {552, "5.3.4", 0},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    if (outcome_relay_refusal(t[i].code, t[i].esc) != t[i].refusal)
      fprintf(stderr, "relay refusal %d %s\n", t[i].code,
              t[i].esc ? t[i].esc : "(null)");
    CHECK_INT(outcome_relay_refusal(t[i].code, t[i].esc), t[i].refusal);
  }
  static const struct {
    const char *esc, *want;
  } s[] = {{"5.7.8", "4.7.8"}, {"5.7.0", "4.7.0"}, {"4.4.2", "4.4.2"},
           {"", "4.4.1"},      {NULL, "4.4.1"},    {"2.0.0", "4.4.1"}};
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    char out[16];
    outcome_defer_status(s[i].esc, "4.4.1", out, sizeof out);
    CHECK_STR(out, s[i].want);
  }
}

/* Delay warnings (delay_warning_time 10m, lifetime 1h), one recipient. */
struct warn_row {
  const char *name;
  enum outcome_state state;
  int attempts;
  unsigned notify;
  const char *sender;
  unsigned notices; /* already sent */
  int removed;
  int64_t now_ms;
  uint64_t warn_ms;
  /* expected */
  int warned; /* a delayed DSN recipient and set_notices on the outcome */
  int ndsn;
};

static const struct warn_row warn_rows[] = {
    {"deferred after the warning time: warned", OUTCOME_TEMPFAIL, 1, 0,
     "s@a.example", 0, 0, END + 600000, 600000, 1, 1},
    {"deferred before the warning time: not yet", OUTCOME_TEMPFAIL, 1, 0,
     "s@a.example", 0, 0, END + 599999, 600000, 0, 0},
    {"warning time off", OUTCOME_TEMPFAIL, 1, 0, "s@a.example", 0, 0,
     T0 + 3000000, 0, 0, 0},
    {"already warned (store or scheduler): never twice", OUTCOME_TEMPFAIL, 1, 0,
     "s@a.example", STORE_NOTICE_DELAY, 0, T0 + 3000000, 600000, 0, 0},
    {"null sender: never", OUTCOME_TEMPFAIL, 1, 0, "", 0, 0, T0 + 3000000,
     600000, 0, 0},
    {"NOTIFY=FAILURE (no DELAY): never", OUTCOME_TEMPFAIL, 1,
     DSN_NOTIFY_FAILURE, "s@a.example", 0, 0, T0 + 3000000, 600000, 0, 0},
    {"NOTIFY=NEVER: never", OUTCOME_TEMPFAIL, 1, DSN_NOTIFY_NEVER,
     "s@a.example", 0, 0, T0 + 3000000, 600000, 0, 0},
    {"NOTIFY=DELAY: warned", OUTCOME_TEMPFAIL, 1, DSN_NOTIFY_DELAY,
     "s@a.example", 0, 0, T0 + 3000000, 600000, 1, 1},
    {"NOTIFY=FAILURE,DELAY: warned", OUTCOME_TEMPFAIL, 1,
     DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, "s@a.example", 0, 0, T0 + 3000000,
     600000, 1, 1},
    {"expired instead: a bounce, no warning", OUTCOME_TEMPFAIL, 5, 0,
     "s@a.example", 0, 0, END + 3600000, 600000, 0, 1},
    {"delivered: no warning", OUTCOME_DELIVERED, 1, 0, "s@a.example", 0, 0,
     T0 + 3000000, 600000, 0, 0},
    {"not tried (pending): no warning", OUTCOME_PENDING, 1, 0, "s@a.example", 0,
     0, T0 + 3000000, 600000, 0, 0},
    {"removed while in flight: no warning", OUTCOME_TEMPFAIL, 1, 0,
     "s@a.example", 0, 1, T0 + 3000000, 600000, 0, 0},
};

static void check_warn_row(const struct warn_row *t) {
  struct outcome_rcpt in = {
      .idx = 0,
      .attempts = t->attempts,
      .addr = "r@b.example",
      .notify = t->notify,
      .state = t->state,
      .err = "452 4.2.2 mailbox full",
      .status = "4.2.2",
      .remote = "mx.b.example",
  };
  struct outcome_msg m = {.id = "W1",
                          .sender = t->sender,
                          .received_at = RECEIVED,
                          .removed = t->removed,
                          .notices = t->notices};
  struct outcome_policy p = pol;
  p.delay_warning_ms = t->warn_ms;
  struct store_outcome so[1];
  struct sched_result sr[1];
  struct dsn_rcpt dr[1];
  struct outcome_note notes[1];
  struct outcome_out out = {
      .store = so, .sched = sr, .dsn = dr, .notes = notes};
  outcome_decide(&m, &in, 1, &p, t->now_ms, &out);
  fprintf(stderr, "- %s\n", t->name);
  CHECK_INT(out.delay_warned, t->warned);
  CHECK_INT(out.ndsn, t->ndsn);
  if (t->warned) {
    CHECK_INT(dr[0].delayed, 1);
    CHECK_STR(dr[0].status, "4.2.2");
    CHECK(dr[0].will_retry_until == RECEIVED + 3600);
    CHECK_INT(out.nstore, 1);
    CHECK_INT(so[0].set_notices, STORE_NOTICE_DELAY);
    CHECK_INT(so[0].state, STORE_RCPT_DEFERRED);
    CHECK_INT(sr[0].outcome, SCHED_RETRY);
  } else {
    for (size_t i = 0; i < out.ndsn; i++)
      CHECK_INT(dr[i].delayed, 0);
    for (size_t i = 0; i < out.nstore; i++)
      CHECK_INT(so[i].set_notices, 0);
  }
}

/* Two deferred recipients and one refused: one report, two delayed
 * blocks and one failed; only the first outcome carries the notice. */
static void test_warn_mixed(void) {
  struct outcome_rcpt in[3] = {
      {.idx = 0,
       .attempts = 1,
       .addr = "a@b.example",
       .state = OUTCOME_TEMPFAIL,
       .err = "451 later",
       .status = "4.3.0",
       .remote = ""},
      {.idx = 1,
       .attempts = 1,
       .addr = "c@b.example",
       .state = OUTCOME_PERMFAIL,
       .err = "550 no",
       .status = "5.1.1",
       .remote = ""},
      {.idx = 2,
       .attempts = 1,
       .addr = "d@b.example",
       .state = OUTCOME_TEMPFAIL,
       .err = "451 later",
       .status = "",
       .remote = ""},
  };
  struct outcome_msg m = {
      .id = "W2", .sender = "s@a.example", .received_at = RECEIVED};
  struct outcome_policy p = pol;
  p.delay_warning_ms = 60000;
  struct store_outcome so[3];
  struct sched_result sr[3];
  struct dsn_rcpt dr[3];
  struct outcome_note notes[3];
  struct outcome_out out = {
      .store = so, .sched = sr, .dsn = dr, .notes = notes};
  outcome_decide(&m, in, 3, &p, T0 + 120000, &out);
  CHECK_INT(out.delay_warned, 1);
  CHECK_INT(out.ndsn, 3);
  CHECK_INT(dr[0].delayed, 1);
  CHECK_INT(dr[1].delayed, 0);
  CHECK_INT(dr[2].delayed, 1);
  CHECK_INT(out.nstore, 3);
  CHECK_INT(so[0].set_notices, STORE_NOTICE_DELAY);
  CHECK_INT(so[1].set_notices, 0);
  CHECK_INT(so[2].set_notices, 0);
}

/* A deadline job (no attempt): recipients left WAITING warn when due,
 * expire past the lifetime with their attempts unchanged, and are
 * otherwise not written at all. */
static void test_waiting(void) {
  struct outcome_rcpt in[3] = {
      {.idx = 0,
       .attempts = 0,
       .addr = "a@b.example",
       .state = OUTCOME_WAITING,
       .err = "",
       .status = "",
       .remote = "",
       .next_at_s = 0},
      {.idx = 1,
       .attempts = 2,
       .addr = "c@b.example",
       .state = OUTCOME_WAITING,
       .err = "connection refused",
       .status = "",
       .remote = "",
       .next_at_s = RECEIVED + 900},
      {.idx = 2,
       .attempts = 1,
       .addr = "d@b.example",
       .notify = DSN_NOTIFY_NEVER,
       .state = OUTCOME_WAITING,
       .err = "451 later",
       .status = "",
       .remote = "",
       .next_at_s = RECEIVED + 900},
  };
  /* The status of a stored SMTP reply: its enhanced code, class 4. */
  {
    struct outcome_rcpt one = in[0];
    one.err = "550 5.7.1 not now";
    struct outcome_msg m1 = {
        .id = "D0", .sender = "s@a.example", .received_at = RECEIVED};
    struct outcome_policy p1 = pol;
    p1.delay_warning_ms = 60000;
    struct store_outcome so1[1];
    struct sched_result sr1[1];
    struct dsn_rcpt dr1[1];
    struct outcome_note n1[1];
    struct outcome_out o1 = {
        .store = so1, .sched = sr1, .dsn = dr1, .notes = n1};
    outcome_decide(&m1, &one, 1, &p1, T0 + 120000, &o1);
    CHECK_INT(o1.ndsn, 1);
    CHECK_STR(dr1[0].status, "4.7.1");
    CHECK_STR(dr1[0].diag, "550 5.7.1 not now");
    one.err = "451 4.3. broken";
    outcome_decide(&m1, &one, 1, &p1, T0 + 120000, &o1);
    CHECK_STR(dr1[0].status, "4.0.0");
  }
  struct outcome_msg m = {
      .id = "D1", .sender = "s@a.example", .received_at = RECEIVED};
  struct outcome_policy p = pol;
  p.delay_warning_ms = 60000;
  struct store_outcome so[3];
  struct sched_result sr[3];
  struct dsn_rcpt dr[3];
  struct outcome_note notes[3];
  struct outcome_out out = {
      .store = so, .sched = sr, .dsn = dr, .notes = notes};

  /* Before the warning: nothing at all. */
  outcome_decide(&m, in, 3, &p, T0 + 30000, &out);
  CHECK_INT(out.nstore, 0);
  CHECK_INT(out.ndsn, 0);
  CHECK_INT(out.delay_warned, 0);
  CHECK_INT(out.nsched, 3);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(sr[i].outcome, SCHED_RETRY);
    CHECK_INT(sr[i].attempts, in[i].attempts);
    CHECK_INT(notes[i].event, OUTCOME_EV_NONE);
  }

  /* The warning is due: one notice, one store row (unchanged) for its
   * bit, no attempt counted. */
  outcome_decide(&m, in, 3, &p, T0 + 120000, &out);
  CHECK_INT(out.delay_warned, 1);
  CHECK_INT(out.ndsn, 2); /* not NOTIFY=NEVER */
  CHECK_INT(dr[0].delayed, 1);
  CHECK_STR(dr[0].addr, "a@b.example");
  CHECK_STR(dr[1].addr, "c@b.example");
  CHECK_INT(dr[1].delayed, 1);
  CHECK_STR(dr[0].status, "4.0.0"); /* no reply stored */
  CHECK_STR(dr[1].status, "4.0.0"); /* a local reason */
  CHECK_INT(dr[1].will_retry_until, RECEIVED + 3600);
  CHECK_INT(out.nstore, 1);
  CHECK_INT(so[0].set_notices, STORE_NOTICE_DELAY);
  CHECK_INT(so[0].state, STORE_RCPT_QUEUED);
  CHECK_INT(so[0].attempts, 0);
  CHECK_INT(so[0].next_attempt_at, 0);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(sr[i].outcome, SCHED_RETRY);
    CHECK_INT(sr[i].attempts, in[i].attempts);
  }

  /* Warned already: nothing. */
  m.notices = STORE_NOTICE_DELAY;
  outcome_decide(&m, in, 3, &p, T0 + 120000, &out);
  CHECK_INT(out.nstore, 0);
  CHECK_INT(out.ndsn, 0);

  /* Past the lifetime: each bounces 4.4.7, attempts unchanged. */
  outcome_decide(&m, in, 3, &p, END + 3600000, &out);
  CHECK_INT(out.nstore, 3);
  CHECK_INT(out.ndsn, 2);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(so[i].state, STORE_RCPT_BOUNCED);
    CHECK_INT(so[i].attempts, in[i].attempts);
    CHECK_INT(sr[i].outcome, SCHED_FINAL);
    CHECK_INT(notes[i].event, OUTCOME_EV_EXPIRED);
    CHECK_INT(notes[i].attempts, in[i].attempts);
    CHECK_STR(notes[i].status, "4.4.7");
  }
  CHECK_STR(so[0].last_error, "message expired after 3600s in the queue");
  CHECK_STR(so[1].last_error, "message expired after 3600s in the queue; "
                              "last error: connection refused");
  CHECK_STR(dr[0].status, "4.4.7");
  CHECK_INT(dr[0].delayed, 0);
  CHECK_INT(dr[0].last_attempt, 0);
}

/* RFC 3461 §4.2.2: delivered to a hop without DSN, NOTIFY=SUCCESS gets a
 * "relayed" notice; not to a hop with DSN, not without SUCCESS, not with
 * NEVER, not from <>, not when removed. */
static void test_relayed(void) {
  struct {
    unsigned notify;
    int no_dsn;
    const char *sender;
    int removed;
    int want;
  } cases[] = {
      {DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE, 1, "s@a.example", 0, 1},
      {DSN_NOTIFY_SUCCESS, 0, "s@a.example", 0, 0},
      {DSN_NOTIFY_FAILURE, 1, "s@a.example", 0, 0},
      {0, 1, "s@a.example", 0, 0},
      {DSN_NOTIFY_SUCCESS, 1, "", 0, 0},
      {DSN_NOTIFY_SUCCESS, 1, "s@a.example", 1, 0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    struct outcome_rcpt in = {.idx = 0,
                              .addr = "r@b.example",
                              .orcpt = "rfc822;r@b.example",
                              .notify = cases[k].notify,
                              .state = OUTCOME_DELIVERED,
                              .err = "250 2.0.0 ok",
                              .status = "2.0.0",
                              .remote = "mx.b.example[192.0.2.1]:25",
                              .relayed_no_dsn = cases[k].no_dsn};
    struct outcome_msg m = {.id = "S1",
                            .sender = cases[k].sender,
                            .received_at = RECEIVED,
                            .removed = cases[k].removed};
    struct store_outcome so[1];
    struct sched_result sr[1];
    struct dsn_rcpt dr[1];
    struct outcome_note n[1];
    struct outcome_out o = {.store = so, .sched = sr, .dsn = dr, .notes = n};
    outcome_decide(&m, &in, 1, &pol, T0 + 5000, &o);
    CHECK_INT(o.ndsn, (size_t)cases[k].want);
    CHECK_INT(n[0].event, OUTCOME_EV_DELIVERED);
    CHECK_INT(o.delay_warned, 0);
    if (o.ndsn) {
      CHECK_INT(dr[0].relayed, 1);
      CHECK_INT(dr[0].delayed, 0);
      CHECK_STR(dr[0].status, "2.0.0");
      CHECK_STR(dr[0].orcpt, "rfc822;r@b.example");
    }
  }
}

/* The last retry is placed at the expiry, which is not a whole second (the
 * arrival counts from the end of its second): its stored time, read back
 * by a deadline job or a restart, must not come before it, or the message
 * gets one attempt too many before it expires (found by a review). */
static void test_last_retry_not_early(void) {
  static const uint64_t sched60[] = {60000};
  struct outcome_policy p6 = {.retry_schedule_ms = sched60,
                              .n_retry_schedule = 1,
                              .queue_lifetime_ms = 6000,
                              .delay_warning_ms = 2000};
  struct outcome_rcpt in = {.idx = 0,
                            .addr = "r@b.example",
                            .state = OUTCOME_TEMPFAIL,
                            .err = "451 4.2.0 later",
                            .status = "4.2.0",
                            .remote = "mx.b.example"};
  struct outcome_msg m = {
      .id = "L1", .sender = "s@a.example", .received_at = RECEIVED};
  struct store_outcome so[1];
  struct sched_result sr[1];
  struct dsn_rcpt dr[1];
  struct outcome_note n[1];
  struct outcome_out o = {.store = so, .sched = sr, .dsn = dr, .notes = n};
  outcome_decide(&m, &in, 1, &p6, T0 + 500, &o);
  CHECK_INT(sr[0].outcome, SCHED_RETRY);
  CHECK_INT(sr[0].retry_at, END + 6000); /* clamped to the expiry */
  CHECK(so[0].next_attempt_at * 1000 >= END + 6000);
  CHECK_INT(n[0].next_at_s, so[0].next_attempt_at);
  /* The attempt at the stored time expires it (4.4.7), none before. */
  in.attempts = 1;
  outcome_decide(&m, &in, 1, &p6, so[0].next_attempt_at * 1000, &o);
  CHECK_INT(n[0].event, OUTCOME_EV_EXPIRED);
}

int main(void) {
  test_relay_refusal();
  test_last_retry_not_early();
  test_relayed();
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    check_row(&rows[i]);
  test_mixed();
  for (size_t i = 0; i < sizeof warn_rows / sizeof warn_rows[0]; i++)
    check_warn_row(&warn_rows[i]);
  test_warn_mixed();
  test_waiting();
  return check_result("test_outbound_outcome");
}

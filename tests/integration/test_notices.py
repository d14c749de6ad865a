"""Delay warnings and the operator's copy of bounces (issue 19, CONTRACT
§2 delay_warning_time and bounce_notice_recipient) against the real
binary, with a real aiosmtpd relayhost on loopback that defers, refuses or
takes each recipient by its address.  Nothing here measures time: the
waits are for counts (attempts in the queue file, messages at the sink),
and the configured durations only make those counts say how much time
went by (four attempts one second apart mean the message is past a two
second warning time)."""
import email
import email.utils
import threading

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port, rows
from test_admin import restart, wait_until
from test_delivery import parse_dsn, send


class Handler:
    """slow*: 451 to RCPT (deferred); nobody*: 550 (bounced); a sender
    address at bad.test refuses mail to itself (so a bounce to it fails);
    anything else is taken and kept."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # (mail_from, [rcpts], bytes)

    async def handle_RCPT(self, server, session, envelope, address, options):
        local = address.split("@")[0]
        if local.startswith("slow"):
            return "451 4.7.1 try later"
        if local.startswith("nobody") or address.endswith("@bad.test"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((envelope.mail_from,
                                  list(envelope.rcpt_tos),
                                  bytes(envelope.original_content)))
        return "250 2.0.0 OK"

    def to(self, addr):
        with self.lock:
            return [m for m in self.messages if addr in m[1]]

    def from_null(self):
        with self.lock:
            return [m for m in self.messages if m[0] == "<>" or m[0] == ""]


@pytest.fixture
def sink():
    h = Handler()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    h.port = c.port
    yield h
    c.stop()


def relay(mailhop, sink, **conf):
    conf.setdefault("retry_schedule", "1s")
    return mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                   **conf)


def attempts(m, addr):
    r = rows(m, "select attempts from recipients where address = ?", addr)
    return r[0][0] if r else None


def wait_attempts(m, addrs, n, timeout=60):
    wait_until(lambda: all((attempts(m, a) or 0) >= n for a in addrs),
               timeout=timeout)


def delayed(sink):
    """The delay warnings the sink got: [(rcpts, message bytes)]."""
    return [(r, d) for f, r, d in sink.from_null()
            if b"Action: delayed" in d and b"Postmaster Copy" not in d]


def test_delay_warning_once_with_the_right_fields(mailhop, sink):
    m = relay(mailhop, sink, delay_warning_time="2s", queue_lifetime="1h",
              bounce_notice_recipient="postmaster@ops.test")
    body = "Subject: stuck\r\nX-Mark: 42\r\n\r\nsecret body\r\n"
    # Warned: no NOTIFY (the relay's choice), and NOTIFY with DELAY.
    send(m, "alice@src.test", ["slow1@b.test", "fine@b.test"], body)
    send(m, "dave@src.test", ["slow4@b.test"], body,
         rcpt_options=["NOTIFY=DELAY,FAILURE"])
    # Never warned: NOTIFY without DELAY, NOTIFY=NEVER, the null sender.
    send(m, "bob@src.test", ["slow2@b.test"], body,
         rcpt_options=["NOTIFY=FAILURE"])
    send(m, "erin@src.test", ["slow5@b.test"], body,
         rcpt_options=["NOTIFY=NEVER"])
    send(m, "", ["slow3@b.test"], body)
    slow = ["slow1@b.test", "slow2@b.test", "slow3@b.test", "slow4@b.test",
            "slow5@b.test"]

    wait_until(lambda: len(delayed(sink)) >= 2, timeout=60)
    # Three more attempts of every message past the warning time (each one
    # is 1 s after the one before, the warning time 2 s): one warning per
    # message, and none for the others.
    wait_attempts(m, slow, max(attempts(m, a) for a in slow) + 3)
    got = delayed(sink)
    assert sorted(r[0] for r, _ in got) == ["alice@src.test",
                                           "dave@src.test"], got
    assert m.log().count("event=delay_warning") == 2
    # Deferrals are never bounces, and a warning is not copied.
    assert sink.to("postmaster@ops.test") == []
    assert "event=bounced" not in m.log()

    (data,) = [d for r, d in got if r == ["alice@src.test"]]
    msg, types, f = parse_dsn(data)
    assert msg["To"] == "<alice@src.test>"
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert "MAILER-DAEMON@mailhop.test" in msg["From"]
    assert msg["Auto-Submitted"] == "auto-replied"
    # Only the deferred recipient: fine@b.test was delivered.
    assert f["final-recipient"] == ["rfc822; slow1@b.test"]
    assert f["action"] == ["delayed"]
    assert f["status"] == ["4.7.1"]
    assert f["diagnostic-code"][0].startswith("smtp; 451 4.7.1")
    # Will-Retry-Until: arrival plus queue_lifetime (1 h).
    arrival = email.utils.parsedate_to_datetime(f["arrival-date"][0])
    until = email.utils.parsedate_to_datetime(f["will-retry-until"][0])
    assert (until - arrival).total_seconds() == 3600
    # The original's header, never its body (a warning returns no content).
    assert types[2] == "text/rfc822-headers"
    assert b"X-Mark: 42" in data and b"secret body" not in data
    assert sink.to("fine@b.test")

    # Remembered across a restart: more attempts, no second warning.
    assert m.stop() == 0
    before = {a: attempts(m, a) for a in slow}
    restart(m)
    wait_attempts(m, slow, max(before.values()) + 2)
    assert len(delayed(sink)) == 2
    assert "event=delay_warning" not in m.log()


def test_no_delay_warning_when_off(mailhop, sink):
    m = relay(mailhop, sink)
    send(m, "alice@src.test", ["slow1@b.test"])
    wait_attempts(m, ["slow1@b.test"], 4)
    assert delayed(sink) == []
    assert "event=delay_warning" not in m.log()


def test_bounce_notice_recipient_gets_a_copy_of_each_bounce(mailhop, sink):
    m = relay(mailhop, sink, bounce_notice_recipient="postmaster@ops.test")
    body = "Subject: lost\r\nX-Mark: 7\r\n\r\nsecret body\r\n"
    # A bounce (with the whole message, RET=FULL) and its copy.
    send(m, "alice@src.test", ["nobody1@b.test"], body,
         mail_options=["RET=FULL"])
    # The null sender: no bounce, so no copy.
    send(m, "", ["nobody2@b.test"], body)
    # A bounce that bounces in turn: one copy, of the first bounce only.
    send(m, "carol@bad.test", ["nobody3@b.test"], body)
    # NOTIFY=NEVER: no bounce written, no copy.
    send(m, "erin@src.test", ["nobody4@b.test"], body,
         rcpt_options=["NOTIFY=NEVER"])
    wait_until(lambda: rows(m, "select count(*) from messages")[0][0] == 0
               and len(sink.to("postmaster@ops.test")) >= 2, timeout=60)

    (bounce,) = sink.to("alice@src.test")
    assert bounce[0] in ("", "<>")
    assert b"secret body" in bounce[2]  # RET=FULL for the sender
    copies = sink.to("postmaster@ops.test")
    assert len(copies) == 2, copies
    assert all(c[0] in ("", "<>") for c in copies)
    by_rcpt = {}
    for _, _, data in copies:
        msg, types, f = parse_dsn(data)
        by_rcpt[f["final-recipient"][0]] = (msg, types, f, data)
    assert sorted(by_rcpt) == ["rfc822; nobody1@b.test",
                               "rfc822; nobody3@b.test"]
    msg, types, f, data = by_rcpt["rfc822; nobody1@b.test"]
    assert msg["To"] == "<postmaster@ops.test>"
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail Returned to " \
        "Sender"
    assert "MAILER-DAEMON@mailhop.test" in msg["From"]
    assert f["action"] == ["failed"]
    assert f["status"] == ["5.1.1"]
    assert b"<alice@src.test>" in data  # whom the bounce went to
    # The header only, even though the sender asked for RET=FULL.
    assert types[2] == "text/rfc822-headers"
    assert b"X-Mark: 7" in data and b"secret body" not in data
    # The failed bounce to carol made neither a bounce nor another copy.
    assert sink.to("carol@bad.test") == []
    assert len(sink.from_null()) == 3

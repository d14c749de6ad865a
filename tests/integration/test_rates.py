"""Rate limits (issue 19, CONTRACT §2 destination_rate, outbound_rate)
against the real binary and real sinks (the scripted sink of the delivery
tests, and an aiosmtpd relayhost): mail over a limit waits in the queue
(state queued, attempts 0, never deferred or bounced for it) and goes out
when the sliding window allows.  Arrivals are checked by count and order,
never by time: a long window (1h) shows what is held, a short one (1s-3s)
that everything is released, each message with one attempt.  The window
arithmetic itself (never more than N starts in any window, sliding rather
than a bucket) is checked with the scheduler's injected clock in
tests/unit/test_sched.c."""
import json
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port, rows, run
from test_delivery import net, recipients, send, wait  # noqa: F401


def rate_dns():
    return {"b.test": [("A", "127.0.0.7", 60)],
            "c.test": [("A", "127.0.0.9", 60)]}


class Arrivals:
    """Records when each message's data ends at a sink."""

    def __init__(self):
        self.times = []
        self.lock = threading.Lock()

    def reply(self, msg):
        with self.lock:
            self.times.append(time.monotonic())
        return "250 2.0.0 Ok: queued"


def assert_waiting(m, count):
    """count recipients still queued, untouched: no attempt counted."""
    st = recipients(m)
    waiting = [r for r in st if r[1] == 0]
    assert len(waiting) == count, st
    assert all(r[2] == 0 for r in waiting), st
    assert "event=deferred" not in m.log()
    assert "event=bounced" not in m.log()


def test_destination_rate_holds_the_rest_queued(net):
    net.records(rate_dns())
    b = net.sink("127.0.0.7")
    c = net.sink("127.0.0.9")
    m = net.relay(destination_rate="3/1h")
    for i in range(10):
        send(m, "a@src.test", [f"r{i}@b.test"])
    for i in range(2):
        send(m, "a@src.test", [f"r{i}@c.test"])
    b.wait(3)
    c.wait(2)  # another destination has its own window
    # Give the scheduler ample time to (wrongly) send more.
    time.sleep(2)
    assert len(b.messages) == 3
    assert len(c.messages) == 2
    assert_waiting(m, 7)
    st = m.cli("status", "--json")
    assert st.returncode == 0, st.stderr
    # A flush does not override the limit.
    assert m.cli("queue", "flush").returncode == 0
    time.sleep(1)
    assert len(b.messages) == 3
    assert_waiting(m, 7)


def test_outbound_rate_counts_all_destinations(net):
    net.records(rate_dns())
    b = net.sink("127.0.0.7")
    c = net.sink("127.0.0.9")
    m = net.relay(outbound_rate="3/1h")
    for i in range(4):
        send(m, "a@src.test", [f"r{i}@b.test"])
        send(m, "a@src.test", [f"r{i}@c.test"])
    wait(lambda: len(b.messages) + len(c.messages) >= 3, what="3 arrivals")
    time.sleep(2)
    assert len(b.messages) + len(c.messages) == 3
    assert_waiting(m, 5)


def test_destination_rate_window_releases_in_order(net):
    """3/3s, 7 messages: all arrive, in groups of 3, 3 and 1 in the order
    they were queued (each group once the window allows: a timer, not a
    retry), all with one attempt and no deferral."""
    net.records(rate_dns())
    arr = Arrivals()
    b = net.sink("127.0.0.7", data_reply=arr.reply)
    m = net.relay(destination_rate="3/3s", retry_schedule="1h")
    for i in range(7):
        send(m, "a@src.test", [f"r{i}@b.test"], body=f"Subject: n{i}\r\n\r\n"
             f"hello {i}\r\n")
    b.wait(7, timeout=60)
    assert len(arr.times) == 7
    order = [msg.addresses[0] for msg in b.messages]
    assert sorted(order[:3]) == ["r0@b.test", "r1@b.test", "r2@b.test"], order
    assert sorted(order[3:6]) == ["r3@b.test", "r4@b.test", "r5@b.test"], order
    assert order[6] == "r6@b.test", order
    wait(lambda: rows(m, "select count(*) from messages")[0][0] == 0,
         what="queue empty")
    assert "event=deferred" not in m.log()
    delivered = [l for l in m.log().splitlines() if "event=delivered" in l]
    assert len(delivered) == 7
    assert all("attempts=1" in l for l in delivered), delivered


def test_rate_survives_connection_reuse(net):
    """Cached connections do not bypass the limit: 2/1h, 5 messages sent
    one after another over one reused connection still stop at 2."""
    net.records(rate_dns())
    b = net.sink("127.0.0.7")
    m = net.relay(destination_rate="2/1h", max_per_destination=1)
    for i in range(5):
        send(m, "a@src.test", [f"r{i}@b.test"])
    b.wait(2)
    time.sleep(2)
    assert len(b.messages) == 2
    assert_waiting(m, 3)


def test_bad_rate_is_a_configuration_error(mailhop):
    m = mailhop(start=False, destination_rate="0/1m")
    r = run("check", "-c", str(m.write_conf()))
    assert r.returncode == 1
    assert "destination_rate" in r.stdout + r.stderr


class Relayhost:
    """An aiosmtpd relayhost that takes everything."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rcpts = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.rcpts.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK"

    def count(self):
        with self.lock:
            return len(self.rcpts)


@pytest.fixture
def relayhost():
    h = Relayhost()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    h.port = c.port
    yield h
    c.stop()


def test_relayhost_is_one_destination_for_the_rate(mailhop, relayhost):
    """With a relayhost every message goes to one destination: 2/1h lets
    2 of 6 through (to three recipient domains); the other 4 wait queued
    with no attempt, not deferred, and the status counts none deferred."""
    m = mailhop(relayhost=f"[127.0.0.1]:{relayhost.port}",
                relayhost_tls="none", destination_rate="2/1h")
    for i in range(6):
        send(m, "a@src.test", [f"r{i}@d{i % 3}.test"])
    wait(lambda: relayhost.count() >= 2, what="2 arrivals")
    # Ample time to (wrongly) send more; then the same counts.
    time.sleep(2)
    assert relayhost.count() == 2
    assert_waiting(m, 4)
    st = json.loads(m.cli("status", "--json").stdout)
    assert st["queue"]["deferred"] == 0, st
    assert st["counters"]["deferred"] == 0, st
    assert st["queue"]["recipients"] == 4, st


def test_short_windows_send_everything_with_one_attempt(mailhop, relayhost):
    """outbound_rate 2/1s with destination_rate 3/1s: 8 messages all
    arrive, each on its first attempt; waiting for the window is never a
    deferral, a retry or a bounce."""
    m = mailhop(relayhost=f"[127.0.0.1]:{relayhost.port}",
                relayhost_tls="none", outbound_rate="2/1s",
                destination_rate="3/1s", retry_schedule="1h")
    for i in range(8):
        send(m, "a@src.test", [f"r{i}@b.test"])
    wait(lambda: relayhost.count() >= 8, timeout=60, what="8 arrivals")
    wait(lambda: rows(m, "select count(*) from messages")[0][0] == 0,
         what="queue empty")
    assert relayhost.count() == 8
    log = m.log()
    delivered = [l for l in log.splitlines() if "event=delivered" in l]
    assert len(delivered) == 8
    assert all("attempts=1" in l for l in delivered), delivered
    assert "event=deferred" not in log and "event=bounced" not in log

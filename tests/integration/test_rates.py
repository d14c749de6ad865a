"""Rate limits (issue 19, CONTRACT §2 destination_rate, outbound_rate)
against the real binary and real sinks: mail over a limit waits in the
queue (state queued, attempts 0, never deferred or bounced for it) and goes
out when the sliding window allows.  Arrivals are checked by count and
order; the one timing check is a generous lower bound on a gap that the
limit itself creates (seconds), never an upper bound on speed."""
import threading
import time

from conftest import rows, run
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
    """3/3s, 7 messages: they arrive in groups of 3, 3 and 1, each group
    once the window allows (a timer, not a retry), all with one attempt."""
    net.records(rate_dns())
    arr = Arrivals()
    b = net.sink("127.0.0.7", data_reply=arr.reply)
    m = net.relay(destination_rate="3/3s", retry_schedule="1h")
    for i in range(7):
        send(m, "a@src.test", [f"r{i}@b.test"], body=f"Subject: n{i}\r\n\r\n"
             f"hello {i}\r\n")
    b.wait(7, timeout=60)
    t = arr.times
    assert len(t) == 7
    # Each group starts at least a window after the one before it; allow
    # half the window for the first group's own delivery time.
    assert t[3] - t[0] >= 1.5, t
    assert t[6] - t[3] >= 1.5, t
    assert t[3] - t[2] >= 1.5 - (t[2] - t[0]), t
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

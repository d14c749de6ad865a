"""`mailhop drain` (CONTRACT §1, §5, §7; issue 20) against real parts: two
mailhop processes on loopback (A drains, B is its peer of the fleet), a
real aiosmtpd sink behind B as its relayhost, and the scripted sink of the
delivery tests as a peer that hangs up in the middle of the data.

What is checked: `drain --to B` hands every queued message to B with its
envelope, DSN parameters (RET, ENVID, NOTIFY, ORCPT) and arrival time as A
stored them, and only then removes it from A; held mail stays; while draining /readyz is
503, `status` says accepting false and SMTP connections are refused;
`drain --cancel` reopens the same port; `--timeout` ends with exit 1 and
the count; a peer that dies mid-transfer loses nothing (the message stays
in A, deferred, and a second drain to a live peer delivers it once): a
scripted peer that hangs up in the data, and a real mailhop B killed with
SIGKILL while the body flows (a relay in front of it kills it after the
first 4 KB of the body), whose restarted queue holds no half message.
No timed assertions: every wait is for a state, with a generous bound."""
import http.client
import json
import re
import smtplib
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import Mailhop, Raw, free_port, rows
from smtpsink import Sink


class SinkHandler:
    """The final destination behind B: records every envelope."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.notices = []  # from <>: the success notices of NOTIFY=SUCCESS

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            (self.notices if envelope.mail_from in ("", "<>")
             else self.messages).append(envelope)
        return "250 2.0.0 OK"

    def count(self):
        with self.lock:
            return len(self.messages)


@pytest.fixture
def sink():
    h = SinkHandler()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    h.port = c.port
    yield h
    c.stop()


@pytest.fixture
def fleet(tmp_path):
    """A factory: fleet(name, **config) -> a started Mailhop in its own
    directory (own queue, socket, metrics port); all killed at the end."""
    started = []

    def make(name, **conf):
        d = tmp_path / name
        d.mkdir()
        mport = free_port()
        conf.setdefault("hostname", f"{name}.fleet.test")
        conf.setdefault("metrics_listen", f"127.0.0.1:{mport}")
        conf.setdefault("retry_schedule", "1h")
        m = Mailhop(d, **conf)
        m.metrics_port = mport
        started.append(m)
        m.start()
        return m

    yield make
    for m in started:
        m.kill()


def readyz(m):
    c = http.client.HTTPConnection("127.0.0.1", m.metrics_port, timeout=10)
    try:
        c.request("GET", "/readyz")
        return c.getresponse().status
    finally:
        c.close()


def metrics(m):
    c = http.client.HTTPConnection("127.0.0.1", m.metrics_port, timeout=10)
    try:
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()
    finally:
        c.close()


def status(m):
    r = m.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(cond, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settled(m, n):
    """A holds n messages and has tried its own (dead) route: the first
    deferred, the rest waiting behind the backed-off destination."""
    def ok():
        st = status(m)
        return (st["queue"]["messages"] == n and st["queue"]["deferred"] >= 1
                and st["outbound"] == 0)
    wait_until(ok, f"{n} messages waiting in {m.dir.name}")


def submit(m, n, prefix="m", dsn=True, arrival=None):
    """n messages to A, each with DSN parameters (and XARRIVAL=arrival,
    unix seconds, when given); returns the ENVIDs."""
    envids = []
    with smtplib.SMTP("127.0.0.1", m.port, timeout=30) as s:
        s.ehlo("client.test")
        for i in range(n):
            envid = f"{prefix}-env-{i}"
            envids.append(envid)
            mail_opts = ["RET=HDRS", f"ENVID={envid}"] if dsn else []
            if arrival is not None:
                mail_opts.append(f"XARRIVAL={arrival}")
            rcpt_opts = (["NOTIFY=SUCCESS,DELAY",
                          f"ORCPT=rfc822;orig-{prefix}{i}@dest.test"]
                         if dsn else [])
            msg = (f"From: a@src.test\r\nTo: r{i}@dest.test\r\n"
                   f"Subject: {prefix} {i}\r\nMessage-ID: <{prefix}{i}@src.test>"
                   f"\r\n\r\nbody {prefix} {i}\r\n")
            s.sendmail("a@src.test", [f"{prefix}{i}@dest.test"], msg,
                       mail_options=mail_opts, rcpt_options=rcpt_opts)
    return envids


def envelopes(m):
    """{envid: (sender, ret, flags, [(address, orcpt, notify, state)])}."""
    out = {}
    for mid, sender, ret, envid in rows(
            m, "SELECT id, sender, ret, envid FROM messages"):
        rc = rows(m, "SELECT address, orcpt, notify FROM recipients "
                     "WHERE message_id=? ORDER BY idx", mid)
        out[envid] = (sender, ret, [tuple(r) for r in rc])
    return out


def queue_count(m):
    return rows(m, "SELECT count(*) FROM messages")[0][0]


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def dead_port():
    return free_port()  # bound and released: nothing listens there


def test_drain_to_a_peer_moves_everything_and_cancel_reopens(fleet, sink):
    # B relays to the sink but is paused at first, so what A handed over
    # can be read from B's queue before it goes on.
    b = fleet("b", relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    # A's own route leads nowhere: its mail stays deferred an hour.
    a = fleet("a", relayhost=f"[127.0.0.1]:{dead_port()}",
              relayhost_tls="none")
    assert b.cli("pause").returncode == 0
    # Arrivals an hour back, as a fleet peer's own hand-off gives them
    # (XARRIVAL): B must keep them, not the time of the drain.
    submit(a, 6, arrival=int(time.time()) - 3600)
    settled(a, 6)
    # One more message, held: drain leaves it where it is.
    submit(a, 1, prefix="held")
    held_id = rows(a, "SELECT id FROM messages WHERE envid='held-env-0'")[0][0]
    assert a.cli("queue", "hold", held_id).returncode == 0
    before = envelopes(a)
    assert len(before) == 7
    arrived = dict(rows(a, "SELECT envid, received_at FROM messages"))
    assert all(t < time.time() - 3000 for e, t in arrived.items()
               if e != "held-env-0")
    assert readyz(a) == 200 and status(a)["accepting"] is True

    r = a.cli("drain", "--to", f"127.0.0.1:{b.port}", "--timeout", "60s",
              timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr, a.log())
    assert r.stdout.strip() == "drained"

    # A keeps only the held message; B has the six, envelopes as A had
    # them (RET, ENVID, NOTIFY, ORCPT, sender, recipients).
    assert [e for e in envelopes(a)] == ["held-env-0"]
    got = envelopes(b)
    assert set(got) == set(before) - {"held-env-0"}
    for envid, env in got.items():
        assert env == before[envid], (envid, env, before[envid])
        assert env[1] != 0  # RET=HDRS stored
        assert env[2][0][1].startswith("rfc822;orig-")
        assert env[2][0][2] != 0  # NOTIFY stored
    # B took them from A over SMTP: its Received: line names A's client
    # address; the first hop's line (A's, with its time) is kept below.
    # The original arrival time (XARRIVAL, offered to relay clients).
    kept = dict(rows(b, "SELECT envid, received_at FROM messages"))
    assert kept == {k: v for k, v in arrived.items() if k != "held-env-0"}
    hdrs = rows(b, "SELECT headers FROM messages")[0][0]
    assert "a.fleet.test" in hdrs and "b.fleet.test" in hdrs, hdrs

    # Draining: not ready, not accepting, connections refused.
    assert readyz(a) == 503
    assert status(a)["accepting"] is False
    assert re.search(r"^mailhop_accepting 0$", metrics(a), re.M)
    assert refused(a.port)
    assert "event=drain" in a.log() and "state=started" in a.log()

    # B delivers what it took: every message once at the sink.
    assert b.cli("resume").returncode == 0
    wait_until(lambda: sink.count() == 6, "6 messages at the sink")
    # NOTIFY=SUCCESS went with them to B, and the sink offers no DSN: B
    # tells the sender, once per message ("Action: relayed").
    wait_until(lambda: len(sink.notices) == 6, "6 success notices")
    assert all(b"Action: relayed" in e.content for e in sink.notices)
    assert sorted(e.rcpt_tos[0] for e in sink.messages) == \
        sorted(f"m{i}@dest.test" for i in range(6))
    wait_until(lambda: queue_count(b) == 0, "B empty")

    # Cancel: the same port accepts again and /readyz says 200.
    r = a.cli("drain", "--cancel")
    assert r.returncode == 0, r.stderr
    assert readyz(a) == 200
    assert status(a)["accepting"] is True
    assert re.search(r"^mailhop_accepting 1$", metrics(a), re.M)
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as s:
        assert s.noop()[0] == 250
    # The peer override is gone: new mail takes A's own (dead) route.
    submit(a, 1, prefix="after", dsn=False)
    assert a.cli("queue", "flush").returncode == 0

    def tried_own_route():
        r = rows(a, "SELECT attempts, last_error FROM recipients "
                    "WHERE address='after0@dest.test'")
        return r and r[0][0] >= 1 and "refused" in (r[0][1] or "")
    wait_until(tried_own_route, "the new message tried by A's own route")
    assert queue_count(b) == 0


def test_drain_times_out_with_the_count(fleet):
    a = fleet("a", relayhost=f"[127.0.0.1]:{dead_port()}",
              relayhost_tls="none")
    submit(a, 3, dsn=False)
    settled(a, 3)
    r = a.cli("drain", "--to", f"127.0.0.1:{dead_port()}", "--timeout", "2s")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.strip() == "timeout: 3 messages remain"
    # The daemon goes on draining, not accepting, until cancelled.
    assert status(a)["accepting"] is False
    assert queue_count(a) == 3
    r = a.cli("drain", "--timeout", "1s", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"drained": False, "remaining": 3,
                                    "sessions": 0}
    assert a.cli("drain", "--cancel").returncode == 0
    assert status(a)["accepting"] is True


def test_suspended_mail_waits_for_its_route_but_goes_to_a_peer(fleet, sink):
    """A suspension holds mail back from its destination; a drain by the
    node's own routes leaves it waiting (and times out with the count), a
    drain handing the queue to a peer hands it on too (that is no
    delivery to the suspended destination).  The suspension itself stays,
    and holds again once the drain is cancelled."""
    b = fleet("b", relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    relayhost = f"[127.0.0.1]:{sink.port}"
    a = fleet("a", relayhost=relayhost, relayhost_tls="none")
    assert a.cli("suspend", relayhost, "--for", "1h").returncode == 0
    submit(a, 2, dsn=False)
    wait_until(lambda: queue_count(a) == 2, "2 messages on A")
    r = a.cli("drain", "--timeout", "2s")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.strip() == "timeout: 2 messages remain"
    assert sink.count() == 0
    r = a.cli("drain", "--to", f"127.0.0.1:{b.port}", "--timeout", "60s",
              timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr, a.log())
    assert queue_count(a) == 0
    wait_until(lambda: sink.count() == 2, "B delivered both")
    assert a.cli("drain", "--cancel").returncode == 0
    (s,) = status(a)["suspended"]
    assert s["destination"] == relayhost
    # Held back again: new mail waits on A.
    submit(a, 1, prefix="after", dsn=False)
    time.sleep(1)
    assert queue_count(a) == 1 and sink.count() == 2


def test_usage_errors(fleet):
    a = fleet("a")
    for args in (["drain", "--to", "nohost"], ["drain", "--to", "h:0"],
                 ["drain", "--cancel", "--to", "h:25"],
                 ["drain", "--timeout", "soon"], ["status", "--to", "h:25"]):
        r = a.cli(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
    assert status(a)["accepting"] is True  # nothing was drained


def test_a_peer_that_dies_mid_transfer_loses_nothing(fleet, sink):
    # The first peer hangs up in the middle of every message's data.
    dying = Sink(drop_in_data=1000)
    b = fleet("b", relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    a = fleet("a", relayhost=f"[127.0.0.1]:{dead_port()}",
              relayhost_tls="none")
    try:
        submit(a, 4)
        settled(a, 4)
        r = a.cli("drain", "--to", f"127.0.0.1:{dying.port}", "--timeout",
                  "3s")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert dying.connections >= 1
        assert not dying.messages  # no transfer finished
        # Nothing lost: all four still in A, tried once more.
        assert queue_count(a) == 4
        wait_until(lambda: status(a)["outbound"] == 0, "attempts over")
        # Drain again to a live peer: each arrives once.
        r = a.cli("drain", "--to", f"127.0.0.1:{b.port}", "--timeout", "60s",
                  timeout=90)
        assert r.returncode == 0, (r.stdout, r.stderr, a.log())
        wait_until(lambda: sink.count() == 4, "4 at the sink")
        wait_until(lambda: queue_count(b) == 0, "B empty")
        assert sorted(e.rcpt_tos[0] for e in sink.messages) == \
            sorted(f"m{i}@dest.test" for i in range(4))
    finally:
        dying.stop()


def test_open_sessions_end_after_their_transaction(fleet, sink):
    """An idle session gets 421 at the drain; one in the middle of a
    transaction finishes its message (250, queued and handed on) and then
    gets 421; the CLI waits for it."""
    b = fleet("b", relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    a = fleet("a", relayhost=f"[127.0.0.1]:{dead_port()}",
              relayhost_tls="none")
    idle = Raw(a.port)
    assert idle.reply()[0] == 220
    assert idle.cmd("EHLO idle.test")[0] == 250
    busy = Raw(a.port)
    assert busy.reply()[0] == 220
    assert busy.cmd("EHLO busy.test")[0] == 250
    assert busy.cmd("MAIL FROM:<s@src.test>")[0] == 250
    assert busy.cmd("RCPT TO:<late@dest.test>")[0] == 250
    wait_until(lambda: status(a)["sessions"] == 2, "two sessions")
    drain = threading.Thread(target=lambda: setattr(
        drain, "r", a.cli("drain", "--to", f"127.0.0.1:{b.port}",
                          "--timeout", "60s", timeout=90)))
    drain.start()
    # The idle one is told at once.
    code, text = idle.reply()
    assert code == 421, text
    assert idle.closed()
    wait_until(lambda: status(a)["accepting"] is False, "draining")
    assert drain.is_alive()  # the busy session is still open
    assert busy.cmd("DATA")[0] == 354
    code, text = busy.cmd("Subject: late\r\n\r\nlate\r\n.")
    assert code == 250, text
    code, text = busy.reply()
    assert code == 421, text
    assert busy.closed()
    drain.join(90)
    assert drain.r.returncode == 0, (drain.r.stdout, drain.r.stderr)
    # The late message went on to the peer with the rest.
    wait_until(lambda: sink.count() == 1, "the late message at the sink")
    assert sink.messages[0].rcpt_tos == ["late@dest.test"]
    assert queue_count(a) == 0


def admin(m, line):
    """One admin command straight on the socket (CONTRACT §5)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(m.conf["admin_socket"])
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def test_admin_drain_command_forms(fleet):
    """`drain [TO] [TIMEOUT_S]` and `drain cancel` answer at once; bad
    words are refused and change nothing."""
    a = fleet("a")
    for bad in ("drain nohost", "drain 127.0.0.1:0", "drain 5 127.0.0.1:25",
                "drain [::1]25", "drain cancel now", "drain a:1 2 3"):
        r = admin(a, bad)
        assert "error" in r, (bad, r)
        assert status(a)["accepting"] is True, bad
    assert admin(a, "drain 30") == {"ok": True}   # own routes, a timeout
    assert status(a)["accepting"] is False
    assert refused(a.port)
    assert admin(a, "drain :2525") == {"ok": True}  # retarget: HOST left out
    assert "to=127.0.0.1:2525" in a.log()
    assert admin(a, "drain [::1]:2525 10") == {"ok": True}
    assert "to=[::1]:2525" in a.log()
    assert admin(a, "drain cancel") == {"ok": True}
    assert status(a)["accepting"] is True
    assert readyz(a) == 200
    # Cancel when not draining is harmless.
    assert admin(a, "drain cancel") == {"ok": True}
    assert status(a)["accepting"] is True


class KillingProxy:
    """A TCP relay in front of the peer B that SIGKILLs B's process once
    the body of a message is flowing (DATA sent and some octets after it):
    a real peer dying mid-transfer, at a point fixed by the bytes, not by
    time."""

    def __init__(self, target_port, victim):
        self.target = target_port
        self.victim = victim
        self.killed = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return

        def down():
            try:
                while (d := u.recv(65536)):
                    c.sendall(d)
            except OSError:
                pass
            c.close()
        threading.Thread(target=down, daemon=True).start()
        seen = b""
        try:
            while (d := c.recv(65536)):
                seen += d
                i = seen.find(b"\r\nDATA\r\n")
                if i >= 0 and len(seen) - i > 4096 and \
                        not self.killed.is_set():
                    u.sendall(d)
                    self.victim.kill()  # SIGKILL, mid-body
                    self.killed.set()
                    break
                u.sendall(d)
        except OSError:
            pass
        c.close()
        u.close()

    def stop(self):
        self.sock.close()


def test_a_peer_killed_mid_transfer_loses_nothing(fleet, sink):
    b = fleet("b", relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    a = fleet("a", relayhost=f"[127.0.0.1]:{dead_port()}",
              relayhost_tls="none")
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as s:
        big = "x" * 998 + "\r\n"
        s.sendmail("a@src.test", ["big@dest.test"],
                   "Subject: big\r\nMessage-ID: <big@src.test>\r\n\r\n" +
                   big * 2000, mail_options=["RET=HDRS", "ENVID=big"])
    settled(a, 1)
    proxy = KillingProxy(b.port, b.proc)
    try:
        r = a.cli("drain", "--to", f"127.0.0.1:{proxy.port}", "--timeout",
                  "5s")
        assert proxy.killed.is_set()
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stdout.strip() == "timeout: 1 message remains"
    finally:
        proxy.stop()
    # Nothing lost: A still has it; B never committed the half message.
    assert [e for e in envelopes(a)] == ["big"]
    b.kill()
    b.start()
    assert queue_count(b) == 0
    # Once B is back, the same drain delivers it, once.
    r = a.cli("drain", "--to", f"127.0.0.1:{b.port}", "--timeout", "60s",
              timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr, a.log())
    wait_until(lambda: sink.count() == 1, "the big message at the sink")
    wait_until(lambda: queue_count(b) == 0, "B empty")
    assert sink.messages[0].rcpt_tos == ["big@dest.test"]
    assert queue_count(a) == 0

"""Queue control for operators (issue 19, CONTRACT §1 and §5): queue
FILTERs and bulk actions, and suspending a destination — black-box: the
real binary, real aiosmtpd peers on loopback (a relayhost that accepts or
defers on command, MX hosts found through a real DNS server on loopback),
the admin socket and the `mailhop queue|suspend|unsuspend` CLI.  Every
check is about order and counts, never about how long something took."""
import calendar
import json
import signal
import smtplib
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port
from dnsserver import DNSServer
from test_admin import (RFC3339, SinkHandler, admin, fill_queue, restart,
                        send, status, wait_until)


def ids(reply):
    return sorted(m["id"] for m in reply["messages"])


def cli_json(m, *args):
    r = m.cli(*args, "--json")
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.fixture
def sink():
    h = SinkHandler()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    h.port = c.port
    yield h
    c.stop()


def all_deferred(m, n):
    def check():
        msgs = admin(m, "queue")[0]["messages"]
        if len(msgs) == n and all(r["state"] == "deferred" and
                                  r["attempts"] == 1
                                  for x in msgs for r in x["recipients"]):
            return msgs
        return None
    return wait_until(check, timeout=30)


# ---- filters and bulk actions -------------------------------------------

def test_bulk_counts_only_what_changed(mailhop, sink):
    """CONTRACT §1: a bulk action prints how many messages it changed —
    not those already so (held, released), nor, for flush, those that
    were due anyway (never tried, held back only by pause)."""
    sink.mode = "defer"
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                retry_schedule="1h")
    assert admin(m, "pause") == [{"ok": True}]
    for i in range(3):
        send(m, "alice@shop.example", (f"r{i}@b.example",))
    wait_until(lambda: status(m)["queue"]["messages"] == 3)
    # Paused, never tried: already due, a flush changes nothing.
    assert admin(m, "flush") == [{"ok": True, "flushed": 0}]
    assert admin(m, "flush all") == [{"ok": True, "count": 0}]
    r = m.cli("queue", "flush")
    assert r.returncode == 0 and r.stdout == "flushed 0 messages\n", r
    # One of three held: release --all releases one.
    first = ids(admin(m, "queue")[0])[0]
    assert admin(m, f"hold {first}") == [{"ok": True}]
    r = m.cli("queue", "release", "--all")
    assert r.returncode == 0 and r.stdout == "released 1 message\n", r
    assert status(m)["queue"]["held"] == 0
    # hold on held mail counts it once.
    assert admin(m, "hold all") == [{"ok": True, "count": 3}]
    assert admin(m, "hold all") == [{"ok": True, "count": 0}]
    assert admin(m, "release all") == [{"ok": True, "count": 3}]
    assert admin(m, "release all") == [{"ok": True, "count": 0}]
    # Deferred for an hour: a flush makes them due now, once.
    assert admin(m, "resume") == [{"ok": True}]
    all_deferred(m, 3)
    assert admin(m, "pause") == [{"ok": True}]
    assert admin(m, "flush") == [{"ok": True, "flushed": 3}]
    assert admin(m, "flush") == [{"ok": True, "flushed": 0}]


def test_filters_and_bulk_actions(mailhop, sink):
    sink.mode = "defer"  # a peer that answers 451 to every RCPT
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                retry_schedule="1h")
    send(m, "alice@shop.example", ("bob@b.example",))
    send(m, "Bob@Shop.Example", ("carol@c.example",))
    send(m, "ops@ops.example", ("dan@b.example", "erin@c.example"))
    send(m, "app@app.example", ("x@f.example",))
    msgs = all_deferred(m, 4)
    by_sender = {x["sender"].lower(): x["id"] for x in msgs}
    shop = sorted([by_sender["alice@shop.example"],
                   by_sender["bob@shop.example"]])

    # Listing: each filter, and their AND, on the socket and the CLI.
    (r,) = admin(m, "queue domain=b.example")
    assert ids(r) == sorted([by_sender["alice@shop.example"],
                             by_sender["ops@ops.example"]])
    assert ids(cli_json(m, "queue", "list", "--domain", "C.example")) == \
        sorted([by_sender["bob@shop.example"], by_sender["ops@ops.example"]])
    assert ids(cli_json(m, "queue", "--sender", "@shop.example")) == shop
    assert ids(cli_json(m, "queue", "--sender", "ops@ops.example")) == \
        [by_sender["ops@ops.example"]]
    assert len(cli_json(m, "queue", "--state", "deferred")["messages"]) == 4
    assert cli_json(m, "queue", "--state", "queued")["messages"] == []
    assert cli_json(m, "queue", "--older-than", "1h")["messages"] == []
    assert len(cli_json(m, "queue", "--older-than", "1")["messages"]) <= 4
    assert ids(cli_json(m, "queue", "--domain", "b.example", "--sender",
                        "@shop.example")) == [by_sender["alice@shop.example"]]
    # A listing shows every recipient of a match.
    (r,) = admin(m, "queue domain=c.example sender=ops@ops.example")
    assert [x["address"] for x in r["messages"][0]["recipients"]] == \
        ["dan@b.example", "erin@c.example"]
    # The human table with a filter.
    r = m.cli("queue", "--domain", "f.example")
    assert r.returncode == 0 and by_sender["app@app.example"] in r.stdout
    assert "1 message," in r.stdout

    # A bulk action needs a filter or --all; bad filters are refused.
    r = m.cli("queue", "delete")
    assert r.returncode == 1 and "--all" in r.stderr, r.stderr
    (e,) = admin(m, "delete state=bounced")
    assert "bad state" in e["error"], e
    (e,) = admin(m, "hold sender=nobody")
    assert "bad sender" in e["error"], e
    r = m.cli("queue", "--older-than", "soon")
    assert r.returncode == 1 and "--older-than" in r.stderr
    assert len(admin(m, "queue")[0]["messages"]) == 4  # nothing changed

    # hold by sender domain: counted, and held in memory and on disk.
    r = m.cli("queue", "hold", "--sender", "@shop.example")
    assert r.returncode == 0 and r.stdout == "held 2 messages\n", r
    assert status(m)["queue"]["held"] == 2
    assert ids(cli_json(m, "queue", "--state", "held")) == shop
    # state=deferred leaves held messages out
    assert len(cli_json(m, "queue", "--state", "deferred")["messages"]) == 2

    # delete by recipient domain, no bounce.
    (r,) = admin(m, "delete domain=f.example")
    assert r == {"ok": True, "count": 1}
    assert status(m)["queue"]["messages"] == 3

    # flush --all: the peer accepts now; held mail stays held.
    sink.mode = "accept"
    r = m.cli("queue", "flush", "--all")
    assert r.returncode == 0 and r.stdout == "flushed 1 message\n", r
    wait_until(lambda: status(m)["queue"]["messages"] == 2)
    assert [e.mail_from for e in sink.messages] == ["ops@ops.example"]

    # release, then flush by filter: delivered.
    (r,) = admin(m, "release sender=@shop.example state=held")
    assert r == {"ok": True, "count": 2}
    assert status(m)["queue"]["held"] == 0
    (r,) = admin(m, "flush sender=@shop.example")
    assert r == {"ok": True, "count": 2}
    wait_until(lambda: status(m)["queue"]["messages"] == 0)
    assert sorted(e.mail_from.lower() for e in sink.messages) == \
        ["alice@shop.example", "bob@shop.example", "ops@ops.example"]
    # A filter that matches nothing acts on nothing.
    (r,) = admin(m, "delete all")
    assert r == {"ok": True, "count": 0}
    assert "event=admin_bulk" in m.log()


N_BULK = 10000


def test_bulk_delete_of_a_large_queue_never_stalls_smtp(mailhop):
    """A bulk delete of 10,000 messages goes in bounded pages: whole SMTP
    transactions (each a commit on the same store) finish while it runs
    (checked by order: between the command and its reply)."""
    dead = free_port()
    m = mailhop(relayhost=f"[127.0.0.1]:{dead}", relayhost_tls="none",
                retry_schedule="1h")
    admin(m, "pause")
    send(m, "app@loop.example", ("bob@b.example",))
    assert m.stop() == 0
    fill_queue(m, N_BULK)
    restart(m)
    admin(m, "pause")
    wait_until(lambda: "loading" not in status(m), timeout=120)

    done_at = []
    stop = threading.Event()

    def smtp_probe():
        while not stop.is_set():
            with smtplib.SMTP("127.0.0.1", m.port, timeout=30) as c:
                c.ehlo("probe.test")
                c.sendmail("probe@p.example", ["keep@k.example"],
                           b"Subject: probe\r\n\r\nx\r\n")
            done_at.append(time.time())

    prober = threading.Thread(target=smtp_probe)
    prober.start()
    try:
        wait_until(lambda: len(done_at) >= 1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(120)
            s.connect(m.conf["admin_socket"])
            sent_at = time.time()
            s.sendall(b"delete domain=b.example\n")
            raw = s.makefile("rb").readline()
            replied_at = time.time()
    finally:
        stop.set()
        prober.join()
    assert json.loads(raw) == {"ok": True, "count": N_BULK}
    during = [t for t in done_at if sent_at < t < replied_at]
    assert len(during) >= 2, (len(done_at), replied_at - sent_at)
    # Only the probes are left, none of them touched.
    st = status(m)
    assert st["queue"]["messages"] == len(done_at), st
    left = admin(m, "queue")[0]["messages"]
    assert {x["sender"] for x in left} == {"probe@p.example"}
    print(f"{len(during)} SMTP transactions during the bulk delete of "
          f"{N_BULK} ({replied_at - sent_at:.2f} s)")


# ---- suspend -------------------------------------------------------------

@pytest.fixture
def mxnet(mailhop):
    """Two recipient domains whose MX is an aiosmtpd sink on loopback,
    found through a real DNS server on loopback."""
    h = SinkHandler()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    dns = DNSServer({}, port=0)
    dns.start()
    recs = {}
    for d in ("s.example", "o.example"):
        recs[d] = [("MX", f"10 mx.{d}", 60)]
        recs[f"mx.{d}"] = [("A", "127.0.0.1", 60)]
    dns.set_records(recs)

    def relay():
        return mailhop(dns_servers=f"127.0.0.1:{dns.port}", smtp_port=c.port,
                       outbound_tls="none", retry_schedule="1h")
    yield h, relay
    c.stop()
    dns.stop()


def delivered_to(sink):
    return [a for e in sink.messages for a in e.rcpt_tos]


def rcpt(m, address):
    for x in admin(m, "queue")[0]["messages"]:
        for r in x["recipients"]:
            if r["address"] == address:
                return r
    return None


def test_suspend_waits_survives_restart_and_unsuspend(mxnet):
    sink, relay = mxnet
    m = relay()
    r = m.cli("suspend", "S.example", "--for", "2h")
    assert r.returncode == 0 and r.stdout == "suspended\n", r
    (sus,) = status(m)["suspended"]
    assert sus["destination"] == "s.example" and RFC3339.match(sus["until"])
    left = calendar.timegm(time.strptime(sus["until"],
                                         "%Y-%m-%dT%H:%M:%SZ")) - time.time()
    assert 7000 < left < 7300, sus
    r = m.cli("status")
    assert "suspended:   s.example until" in r.stdout, r.stdout

    # One message to both domains: o.example goes, s.example waits.
    send(m, "a@src.example", ("x@s.example", "y@o.example"))
    wait_until(lambda: "y@o.example" in delivered_to(sink))
    # flush does not override a suspension: a later message to o.example
    # is delivered after the flush, s.example's mail still waits, never
    # tried (no attempt counted, not deferred).
    assert m.cli("queue", "flush").returncode == 0
    send(m, "a@src.example", ("z@o.example",))
    wait_until(lambda: "z@o.example" in delivered_to(sink))
    r1 = rcpt(m, "x@s.example")
    assert r1["state"] == "queued" and r1["attempts"] == 0, r1
    assert status(m)["queue"]["deferred"] == 0
    # Its next attempt is when the suspension ends, not "now".
    assert r1["next_attempt_at"] == sus["until"], r1

    # A restart keeps the suspension (queue database).
    assert m.stop() == 0
    st = restart(m)
    assert [s["destination"] for s in st["suspended"]] == ["s.example"]
    assert st["suspended"][0]["until"] == sus["until"]
    send(m, "a@src.example", ("w@o.example",))
    wait_until(lambda: "w@o.example" in delivered_to(sink))
    r1 = rcpt(m, "x@s.example")
    assert r1["state"] == "queued" and r1["attempts"] == 0, r1
    assert "x@s.example" not in delivered_to(sink)

    # unsuspend: delivered with its first attempt.
    r = m.cli("unsuspend", "s.example")
    assert r.returncode == 0 and r.stdout == "unsuspended\n", r
    assert status(m)["suspended"] == []
    wait_until(lambda: "x@s.example" in delivered_to(sink))
    wait_until(lambda: status(m)["queue"]["messages"] == 0)
    r = m.cli("unsuspend", "s.example")
    assert r.returncode == 1 and "not suspended" in r.stderr


def test_suspension_ends_by_itself(mxnet):
    sink, relay = mxnet
    m = relay()
    assert admin(m, "suspend o.example 1") == [{"ok": True}]
    send(m, "a@src.example", ("y@o.example",))
    # Delivered once the second is over, without anyone lifting it.
    wait_until(lambda: "y@o.example" in delivered_to(sink), timeout=30)
    assert status(m)["suspended"] == []


def test_suspend_a_relayhost_as_written(mailhop, sink):
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                retry_schedule="1h")
    written = f"[127.0.0.1]:{sink.port}"
    assert admin(m, f"suspend {written}") == [{"ok": True}]
    (sus,) = status(m)["suspended"]
    assert sus["destination"] == written
    send(m, "a@src.example", ("bob@b.example",))
    assert admin(m, "flush")[0]["ok"] is True
    # Still there after a restart, never tried.
    assert m.stop() == 0
    st = restart(m)
    assert [s["destination"] for s in st["suspended"]] == [written]
    r1 = rcpt(m, "bob@b.example")
    assert r1["state"] == "queued" and r1["attempts"] == 0, r1
    assert sink.messages == []
    assert admin(m, f"unsuspend {written}") == [{"ok": True}]
    wait_until(lambda: len(sink.messages) == 1)
    # Errors: bad duration, unknown verb use.
    (e,) = admin(m, "suspend o.example 0")
    assert "bad duration" in e["error"], e
    (e,) = admin(m, "suspend")
    assert e["error"].startswith("usage: suspend"), e
    r = m.cli("suspend", "o.example", "--for", "forever")
    assert r.returncode == 1 and "--for" in r.stderr


def test_a_full_disk_changes_nothing(mailhop, sink, tmp_path):
    """A bulk action or a suspension that the store cannot write is
    undone in memory too: nothing held, nothing deleted, nothing
    suspended, and the error says so."""
    full = tmp_path / "disk-full"
    sink.mode = "defer"
    m = mailhop(start=False, relayhost=f"[127.0.0.1]:{sink.port}",
                relayhost_tls="none", retry_schedule="1h")
    m.start(env={"MAILHOP_DEBUG_ENOSPC_FILE": str(full)})
    send(m, "a@shop.example", ("bob@b.example",))
    send(m, "b@shop.example", ("carol@b.example",))
    all_deferred(m, 2)
    full.write_text("")
    for line in ("hold domain=b.example", "delete all",
                 "suspend b.example 600"):
        (e,) = admin(m, line)
        assert "No space left on device" in e["error"], (line, e)
    st = status(m)
    assert st["queue"]["messages"] == 2 and st["queue"]["held"] == 0, st
    assert st["suspended"] == []
    # With space again the same commands work, and flush finds the mail
    # still scheduled.
    full.unlink()
    assert admin(m, "hold domain=b.example") == [{"ok": True, "count": 2}]
    assert admin(m, "flush all") == [{"ok": True, "count": 0}]
    assert admin(m, "release all") == [{"ok": True, "count": 2}]
    sink.mode = "accept"
    assert admin(m, "flush domain=b.example") == [{"ok": True, "count": 2}]
    wait_until(lambda: status(m)["queue"]["messages"] == 0)


V1_SCHEMA = """
CREATE TABLE messages(id TEXT PRIMARY KEY, sender TEXT NOT NULL,
 size INTEGER NOT NULL, received_at INTEGER NOT NULL,
 held INTEGER NOT NULL DEFAULT 0, ret INTEGER NOT NULL DEFAULT 0,
 envid TEXT, flags INTEGER NOT NULL DEFAULT 0, headers TEXT,
 body BLOB NOT NULL);
CREATE TABLE recipients(message_id TEXT NOT NULL, idx INTEGER NOT NULL,
 address TEXT NOT NULL, orcpt TEXT, notify INTEGER NOT NULL DEFAULT 0,
 domain TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0,
 attempts INTEGER NOT NULL DEFAULT 0,
 next_attempt_at INTEGER NOT NULL DEFAULT 0, last_error TEXT,
 PRIMARY KEY(message_id, idx)) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def test_a_version_1_queue_is_migrated_and_delivered(mailhop, sink):
    """A queue written before suspensions existed (schema version 1) opens,
    gains the table, and its mail is delivered; suspensions then work."""
    import sqlite3
    m = mailhop(start=False, relayhost=f"[127.0.0.1]:{sink.port}",
                relayhost_tls="none", retry_schedule="1h")
    body = b"Subject: old\r\n\r\nfrom before\r\n"
    db = sqlite3.connect(m.conf["queue_path"])
    db.executescript(V1_SCHEMA)
    with db:
        db.execute("INSERT INTO messages VALUES(?, ?, ?, ?, 0, 0, NULL, 0,"
                   " ?, ?)", ("0000000001abcd", "old@v1.example", len(body),
                              int(time.time()) - 60, "Subject: old\r\n",
                              body))
        db.execute("INSERT INTO recipients VALUES(?, 0, ?, NULL, 0, ?, 0, 0,"
                   " 0, NULL)", ("0000000001abcd", "bob@v1.example",
                                 "v1.example"))
    db.close()
    m.start()
    wait_until(lambda: len(sink.messages) == 1)
    assert sink.messages[0].mail_from == "old@v1.example"
    wait_until(lambda: status(m)["queue"]["messages"] == 0)
    with m.db() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert admin(m, "suspend v1.example 60") == [{"ok": True}]
    with m.db() as db:
        assert db.execute("SELECT dest FROM suspensions").fetchall() == \
            [("v1.example",)]


def test_a_filter_given_twice_is_refused(mailhop, sink):
    """`--domain a --domain b` used to keep only b: a bulk delete then
    removed the wrong set.  Each filter option is refused when repeated,
    before anything reaches the daemon."""
    sink.mode = "defer"
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                retry_schedule="1h")
    send(m, "a@src.example", ("x@a.test",))
    send(m, "a@src.example", ("y@b.test",))
    all_deferred(m, 2)
    for opt, v1, v2 in (("--domain", "a.test", "b.test"),
                        ("--sender", "a@src.example", "@src.example"),
                        ("--state", "deferred", "held"),
                        ("--older-than", "1s", "2h")):
        for verb in (("queue",), ("queue", "delete")):
            r = m.cli(*verb, opt, v1, opt, v2)
            assert r.returncode == 1, (opt, r)
            assert f"{opt} given twice" in r.stderr, r.stderr
            assert r.stdout == "", r.stdout
    assert status(m)["queue"]["messages"] == 2


def test_the_null_sender_can_be_selected(mailhop, sink):
    """Bounces (MAIL FROM:<>) are selected with --sender '<>' — and only
    they: a bulk action on them leaves the other mail alone."""
    sink.mode = "defer"
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                retry_schedule="1h")
    send(m, "", ("x@a.test",))
    send(m, "a@src.example", ("y@a.test",))
    msgs = all_deferred(m, 2)
    (bounce,) = [x["id"] for x in msgs if x["sender"] == ""]
    assert ids(cli_json(m, "queue", "--sender", "<>")) == [bounce]
    assert ids(admin(m, "queue sender=<>")[0]) == [bounce]
    r = m.cli("queue", "delete", "--sender", "<>", "--domain", "a.test")
    assert r.returncode == 0, r
    assert [x["sender"] for x in admin(m, "queue")[0]["messages"]] == \
        ["a@src.example"]


# ---- suspend: what a name covers -------------------------------------------

@pytest.fixture
def ctl():
    """A second sink: the control route's peer, never suspended."""
    h = SinkHandler()
    c = Controller(h, hostname="127.0.0.1", port=free_port())
    c.start()
    h.port = c.port
    yield h
    c.stop()


def waits(m, *addresses):
    """Every address is queued, never tried (a suspension holds it)."""
    for a in addresses:
        r = rcpt(m, a)
        assert r is not None and r["state"] == "queued" and \
            r["attempts"] == 0, (a, r)


def test_suspend_a_relayhost_holds_every_route_to_it(mailhop, sink, ctl,
                                                     tmp_path):
    """CONTRACT §1: a relayhost as written in the configuration.  Its name
    covers the global relayhost, a routes_file route with the same
    relayhost, a second route with the same relayhost but other settings
    (a key of its own, "#LINE"), and a route whose relayhost is written in
    upper case; `[host]` without a port covers that host on every port it
    is configured with.  A control route to another sink shows that mail
    flows meanwhile."""
    p, q = sink.port, ctl.port
    routes = tmp_path / "routes"
    routes.write_text(
        f"recipient:@r1.test relayhost=[127.0.0.1]:{p} relayhost_tls=none\n"
        f"recipient:@r2.test relayhost=[127.0.0.1]:{p} "
        "relayhost_tls=opportunistic\n"
        f"recipient:@ctl.test relayhost=[127.0.0.1]:{q} relayhost_tls=none\n"
        f"recipient:@up.test relayhost=[MX.A.TEST]:{p} relayhost_tls=none\n")
    m = mailhop(relayhost=f"[127.0.0.1]:{p}", relayhost_tls="none",
                routes_file=routes, retry_schedule="1h")
    r = m.cli("suspend", f"[127.0.0.1]:{p}")
    assert r.returncode == 0 and r.stdout == "suspended\n", r
    r = m.cli("suspend", "[Mx.A.Test]")
    assert r.returncode == 0, r
    assert [s["destination"] for s in status(m)["suspended"]] == \
        [f"[127.0.0.1]:{p}", "[mx.a.test]"]

    send(m, "a@src.example", ("g@g.test", "a@r1.test", "b@r2.test",
                              "u@up.test", "c1@ctl.test"))
    wait_until(lambda: "c1@ctl.test" in delivered_to(ctl))
    assert m.cli("queue", "flush").returncode == 0
    send(m, "a@src.example", ("c2@ctl.test",))
    wait_until(lambda: "c2@ctl.test" in delivered_to(ctl))
    waits(m, "g@g.test", "a@r1.test", "b@r2.test", "u@up.test")
    assert sink.messages == []

    # A restart keeps them, with the same cover (the routes are known again
    # before the queue loads).
    assert m.stop() == 0
    st = restart(m)
    assert [s["destination"] for s in st["suspended"]] == \
        [f"[127.0.0.1]:{p}", "[mx.a.test]"]
    send(m, "a@src.example", ("c3@ctl.test",))
    wait_until(lambda: "c3@ctl.test" in delivered_to(ctl))
    waits(m, "g@g.test", "a@r1.test", "b@r2.test", "u@up.test")
    assert sink.messages == []

    # Two names may cover one key: "relayhost" (the global one's key) too.
    assert m.cli("suspend", "relayhost").returncode == 0
    # unsuspend lifts what it covered and no other name still covers: the
    # routes go, the global relayhost's mail waits for "relayhost", the
    # upper-case route (another host) for its own name.
    r = m.cli("unsuspend", f"[127.0.0.1]:{p}")
    assert r.returncode == 0 and r.stdout == "unsuspended\n", r
    wait_until(lambda: sorted(delivered_to(sink)) == ["a@r1.test",
                                                      "b@r2.test"])
    send(m, "a@src.example", ("c4@ctl.test",))
    wait_until(lambda: "c4@ctl.test" in delivered_to(ctl))
    waits(m, "g@g.test", "u@up.test")
    assert [s["destination"] for s in status(m)["suspended"]] == \
        ["[mx.a.test]", "relayhost"]
    assert m.cli("unsuspend", "relayhost").returncode == 0
    wait_until(lambda: sorted(delivered_to(sink)) ==
               ["a@r1.test", "b@r2.test", "g@g.test"])
    waits(m, "u@up.test")
    assert m.cli("unsuspend", "[MX.A.TEST]").returncode == 0
    assert status(m)["suspended"] == []



def test_suspend_names_the_reason_of_a_bad_destination(mailhop, sink):
    """A name that is neither a configured relayhost or route nor a domain
    is refused with a reason; a well-formed domain without mail is fine
    (mail may come later)."""
    m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none")
    r = m.cli("suspend", "a b")
    assert r.returncode == 1, r
    assert "bad destination 'a b'" in r.stderr, r.stderr
    r = m.cli("suspend", "[no.such.test]:25")
    assert r.returncode == 1, r
    assert "not a configured relayhost" in r.stderr, r.stderr
    (e,) = admin(m, "suspend -x.test")
    assert "not a configured relayhost" in e["error"], e
    assert status(m)["suspended"] == []
    assert m.cli("suspend", "later.example").returncode == 0
    assert [s["destination"] for s in status(m)["suspended"]] == \
        ["later.example"]


def test_a_suspension_covers_routes_added_by_a_reload(mailhop, sink, ctl,
                                                      tmp_path):
    """After SIGHUP reloads the routes, a suspended relayhost name covers
    the new routes to it as well (their keys are new)."""
    p, q = sink.port, ctl.port
    routes = tmp_path / "routes"
    routes.write_text(
        f"recipient:@ctl.test relayhost=[127.0.0.1]:{q} relayhost_tls=none\n")
    m = mailhop(relayhost=f"[127.0.0.1]:{p}", relayhost_tls="none",
                routes_file=routes, retry_schedule="1h")
    assert m.cli("suspend", f"[127.0.0.1]:{p}").returncode == 0
    routes.write_text(
        f"recipient:@ctl.test relayhost=[127.0.0.1]:{q} relayhost_tls=none\n"
        f"recipient:@new.test relayhost=[127.0.0.1]:{p} "
        "relayhost_tls=opportunistic\n")
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("routes reloaded")
    send(m, "a@src.example", ("n@new.test", "g@g.test", "c1@ctl.test"))
    wait_until(lambda: "c1@ctl.test" in delivered_to(ctl))
    waits(m, "n@new.test", "g@g.test")
    assert sink.messages == []
    assert m.cli("unsuspend", f"[127.0.0.1]:{p}").returncode == 0
    wait_until(lambda: sorted(delivered_to(sink)) == ["g@g.test",
                                                      "n@new.test"])

"""Delivery (CONTRACT §4) against the real binary: a loopback DNS server
with MX records, scripted SMTP servers on 127.0.0.x sharing one high port,
retries on a fast schedule, bounces parsed back."""
import email
import json
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import Mailhop, free_port, rows
from dnsserver import DNSServer
from smtpsink import Sink


@pytest.fixture
def net(mailhop):
    """A DNS server, a shared MX port, and a started-mailhop factory."""
    port = free_port()
    dns = DNSServer({}, port=0)
    dns.start()
    sinks = []

    class Net:
        smtp_port = port

        def sink(self, ip, **kw):
            s = Sink(host=ip, port=port, **kw)
            sinks.append(s)
            return s

        def records(self, recs):
            dns.set_records(recs)

        def relay(self, **conf):
            conf.setdefault("dns_servers", f"127.0.0.1:{dns.port}")
            conf.setdefault("smtp_port", port)
            conf.setdefault("retry_schedule", "1s")
            conf.setdefault("outbound_tls", "none")
            return mailhop(**conf)

    yield Net()
    for s in sinks:
        s.stop()
    dns.stop()


def send(m, sender, rcpts, body="Subject: t\r\n\r\nhello\r\n", **opts):
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    s.ehlo("client.example")
    s.sendmail(sender, rcpts, body, **opts)
    s.quit()


def recipients(m):
    return rows(m, "select address, state, attempts, last_error from "
                "recipients order by message_id, idx")


def wait(fn, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def queue_empty(m):
    return rows(m, "select count(*) from messages")[0][0] == 0


def test_mx_preference_order_and_fallback(net):
    net.records({"d.test": [("MX", "10 mx1.d.test", 60),
                            ("MX", "20 mx2.d.test", 60)],
                 "mx1.d.test": [("A", "127.0.0.2", 60)],
                 "mx2.d.test": [("A", "127.0.0.3", 60)]})
    mx2 = net.sink("127.0.0.3")
    m = net.relay()
    # mx1 has no server: connection refused, the next MX takes it.
    send(m, "a@src.test", ["x@d.test"])
    msgs = mx2.wait(1)
    assert msgs[0].addresses == ["x@d.test"]
    wait(lambda: queue_empty(m), what="queue empty")
    assert "event=delivered" in m.log() and "mx2.d.test[127.0.0.3]" in m.log()
    # With mx1 up, the better preference is used (once the connection to
    # mx2 kept for reuse has timed out, after 2 s).
    mx1 = net.sink("127.0.0.2")
    time.sleep(2.5)
    send(m, "a@src.test", ["y@d.test"])
    mx1.wait(1)
    assert len(mx2.messages) == 1


def test_5xx_greeting_skipped(net):
    net.records({"g.test": [("MX", "10 mx1.g.test", 60),
                            ("MX", "20 mx2.g.test", 60)],
                 "mx1.g.test": [("A", "127.0.0.4", 60)],
                 "mx2.g.test": [("A", "127.0.0.5", 60)]})
    net.sink("127.0.0.4", greeting="554 5.3.2 go away")
    good = net.sink("127.0.0.5")
    m = net.relay()
    send(m, "a@src.test", ["x@g.test"])
    good.wait(1)
    wait(lambda: queue_empty(m))


def test_4xx_then_success_on_retry(net):
    net.records({"r.test": [("A", "127.0.0.6", 60)]})  # implicit MX
    tries = []

    def rcpt(addr, n):
        tries.append(addr)
        return "451 4.7.1 greylisted" if len(tries) == 1 else "250 2.1.5 Ok"

    sink = net.sink("127.0.0.6", rcpt_reply=rcpt)
    m = net.relay()
    send(m, "a@src.test", ["x@r.test"])
    wait(lambda: any(r[1] == 1 for r in recipients(m)) or len(sink.messages),
         what="deferral")
    sink.wait(1, timeout=30)
    wait(lambda: queue_empty(m))
    assert "event=deferred" in m.log() and "greylisted" in m.log()
    assert "event=delivered" in m.log()


def bounce_dns():
    return {"b.test": [("A", "127.0.0.7", 60)],
            "src.test": [("MX", "10 mx.src.test", 60)],
            "mx.src.test": [("A", "127.0.0.8", 60)]}


def parse_dsn(data):
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    types = [p.get_content_type() for p in parts]
    assert types[0] == "text/plain"
    assert types[1] == "message/delivery-status"
    ds = parts[1].get_payload()
    fields = {}
    for block in ds:
        for k, v in block.items():
            fields.setdefault(k.lower(), []).append(v)
    return msg, types, fields


def test_notify_success_to_a_hop_without_dsn_is_answered_relayed(net):
    """RFC 3461 §4.2.2, CONTRACT §3 (NOTIFY honoured): relayed to a next
    hop that does not offer DSN, a recipient whose sender asked
    NOTIFY=SUCCESS gets an "Action: relayed" notice from us; to a hop that
    offers DSN the parameters go on and the notice is the hop's to send.
    Without SUCCESS, or from <>, no notice.  A message flagged SMTPUTF8
    but all ASCII goes to a hop without SMTPUTF8 (RFC 6531 §3.2), where it
    used to bounce 5.6.7."""
    recs = bounce_dns()
    recs["nodsn.test"] = [("A", "127.0.0.7", 60)]
    recs["dsn.test"] = [("A", "127.0.0.9", 60)]
    net.records(recs)
    plain = net.sink("127.0.0.7", extensions=["PIPELINING", "8BITMIME"])
    full = net.sink("127.0.0.9")
    home = net.sink("127.0.0.8")
    m = net.relay(hostname="relay.test")
    send(m, "alice@src.test", ["x@nodsn.test"],
         "Subject: original\r\nX-Mark: 42\r\n\r\nbody\r\n",
         mail_options=["ENVID=e1", "SMTPUTF8"],
         rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@nodsn.test"])
    send(m, "alice@src.test", ["y@dsn.test"],
         rcpt_options=["NOTIFY=SUCCESS"])
    send(m, "alice@src.test", ["z@nodsn.test"], rcpt_options=["NOTIFY=FAILURE"])
    send(m, "", ["w@nodsn.test"], rcpt_options=["NOTIFY=SUCCESS"])
    plain.wait(3)
    full.wait(1)
    assert "SMTPUTF8" not in plain.messages[0].mail_params
    (dsn,) = home.wait(1)
    time.sleep(1)
    assert len(home.messages) == 1  # only x@ gets a notice
    assert dsn.sender == "" and dsn.addresses == ["alice@src.test"]
    msg, types, f = parse_dsn(dsn.data)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert types[2] == "text/rfc822-headers"
    assert f["action"] == ["relayed"]
    assert f["status"] == ["2.0.0"]
    assert f["final-recipient"] == ["rfc822; x@nodsn.test"]
    assert f["original-recipient"] == ["rfc822;x@nodsn.test"]
    assert f["original-envelope-id"] == ["e1"]
    assert f["remote-mta"] == ["dns; nodsn.test"]
    assert "event=bounced" not in m.log()
    wait(lambda: queue_empty(m))


def test_5xx_bounces_with_parseable_dsn(net):
    net.records(bounce_dns())
    net.sink("127.0.0.7",
             rcpt_reply=lambda a, n: "550 5.1.1 <%s>: user unknown" % a)
    home = net.sink("127.0.0.8")
    m = net.relay(hostname="relay.test")
    send(m, "alice@src.test", ["nobody@b.test"],
         "Subject: original\r\nX-Mark: 42\r\n\r\nbody\r\n")
    (dsn,) = home.wait(1)
    assert dsn.sender == ""
    assert dsn.addresses == ["alice@src.test"]
    msg, types, f = parse_dsn(dsn.data)
    assert "MAILER-DAEMON@relay.test" in msg["From"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert types[2] == "text/rfc822-headers"
    assert f["reporting-mta"] == ["dns; relay.test"]
    assert "arrival-date" in f
    assert f["final-recipient"] == ["rfc822; nobody@b.test"]
    assert f["action"] == ["failed"]
    assert f["status"] == ["5.1.1"]
    assert "remote-mta" in f
    assert f["diagnostic-code"][0].startswith("smtp; 550 5.1.1")
    assert b"X-Mark: 42" in dsn.data and b"\r\nbody\r\n" not in dsn.data
    wait(lambda: queue_empty(m))
    assert "event=bounced" in m.log()


def test_ret_full_returns_whole_message(net):
    net.records(bounce_dns())
    net.sink("127.0.0.7", rcpt_reply=lambda a, n: "550 5.1.1 unknown")
    home = net.sink("127.0.0.8")
    m = net.relay()
    send(m, "alice@src.test", ["nobody@b.test"],
         "Subject: full\r\n\r\nthe whole body\r\n", mail_options=["RET=FULL"])
    (dsn,) = home.wait(1)
    msg, types, f = parse_dsn(dsn.data)
    assert types[2] == "message/rfc822"
    assert b"the whole body" in dsn.data


def test_notify_never_no_bounce(net):
    net.records(bounce_dns())
    net.sink("127.0.0.7", rcpt_reply=lambda a, n: "550 5.1.1 unknown")
    home = net.sink("127.0.0.8")
    m = net.relay()
    send(m, "alice@src.test", ["nobody@b.test"],
         rcpt_options=["NOTIFY=NEVER"])
    wait(lambda: queue_empty(m))
    time.sleep(1)
    assert home.messages == []
    assert "event=bounced" in m.log()


def test_mixed_per_recipient_results(net):
    net.records(bounce_dns())

    def rcpt(addr, n):
        return {"ok@b.test": "250 2.1.5 Ok",
                "bad@b.test": "550 5.1.1 unknown",
                "later@b.test": "450 4.2.1 mailbox busy"}[addr]

    sink = net.sink("127.0.0.7", rcpt_reply=rcpt)
    home = net.sink("127.0.0.8")
    m = net.relay(retry_schedule="1h")
    send(m, "alice@src.test", ["ok@b.test", "bad@b.test", "later@b.test"])
    (got,) = sink.wait(1)
    assert got.addresses == ["ok@b.test"]
    (dsn,) = home.wait(1)
    _, _, f = parse_dsn(dsn.data)
    assert f["final-recipient"] == ["rfc822; bad@b.test"]
    state = wait(lambda: [r for r in recipients(m) if r[0] == "later@b.test"
                          and r[1] == 1], what="deferred recipient")
    assert state[0][2] == 1 and "450 4.2.1 mailbox busy" in state[0][3]
    # The message stays queued only for the deferred recipient.
    open_rcpts = [r[0] for r in recipients(m) if r[1] in (0, 1)
                  and r[0] != "alice@src.test"]  # (the bounce may be queued)
    assert open_rcpts == ["later@b.test"]


def test_one_transaction_and_452_continuation(net):
    net.records({"many.test": [("A", "127.0.0.9", 60)]})
    sink = net.sink("127.0.0.9", rcpt_reply=lambda a, n:
                    "452 4.5.3 Too many recipients" if n >= 2 else "250 Ok")
    m = net.relay()
    rc = [f"r{i}@many.test" for i in range(5)]
    send(m, "a@src.test", rc)
    wait(lambda: queue_empty(m), what="all delivered")
    got = sorted(a for msg in sink.messages for a in msg.addresses)
    assert got == sorted(rc)
    assert sink.transactions == 3  # 2 + 2 + 1, no deferral
    assert "event=deferred" not in m.log()


def test_connection_reused_for_next_message(net):
    net.records({"reuse.test": [("A", "127.0.0.15", 60)]})
    sink = net.sink("127.0.0.15")
    m = net.relay()
    for i in range(5):
        send(m, "a@src.test", [f"r{i}@reuse.test"])
        sink.wait(i + 1)
    assert sink.connections == 1
    wait(lambda: queue_empty(m))


def test_one_transaction_for_several_recipients(net):
    net.records({"one.test": [("A", "127.0.0.10", 60)]})
    sink = net.sink("127.0.0.10")
    m = net.relay()
    send(m, "a@src.test", ["a@one.test", "b@one.test", "c@one.test"])
    sink.wait(1)
    wait(lambda: queue_empty(m))
    assert sink.transactions == 1
    assert sorted(sink.messages[0].addresses) == ["a@one.test", "b@one.test",
                                                  "c@one.test"]


def test_dsn_parameters_passed_on(net):
    net.records({"dsn.test": [("A", "127.0.0.11", 60)]})
    sink = net.sink("127.0.0.11")
    m = net.relay()
    send(m, "a@src.test", ["x@dsn.test"], mail_options=["RET=HDRS",
                                                        "ENVID=abc+2B1"],
         rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@dsn.test"])
    (msg,) = sink.wait(1)
    assert "RET=HDRS" in msg.mail_params and "ENVID=abc+2B1" in msg.mail_params
    rp = msg.rcpts[0][1]
    assert "NOTIFY=SUCCESS,FAILURE" in rp and "ORCPT=rfc822;x@dsn.test" in rp


def test_expiry_bounce_447(net):
    net.records(bounce_dns())
    net.sink("127.0.0.7", rcpt_reply=lambda a, n: "451 4.3.0 try later")
    home = net.sink("127.0.0.8")
    m = net.relay(queue_lifetime="1500ms", retry_schedule="300ms")
    send(m, "alice@src.test", ["slow@b.test"])
    (dsn,) = home.wait(1, timeout=30)
    _, _, f = parse_dsn(dsn.data)
    assert f["status"] == ["4.4.7"]
    assert "event=expired" in m.log()
    wait(lambda: queue_empty(m))


def test_deadlines_never_come_early(net):
    """CONTRACT §4: a recipient bounces *past* queue_lifetime, and the
    delay warning comes after delay_warning_time.  The queue keeps arrival
    times in whole seconds; counted from the start of that second, both
    came up to a second early (a black-box run saw the warning of 2s after
    1.82 s).  Measured from before the message was sent, so arrival can
    only be later; and no logged delay is negative (one of our own notices
    once logged delay=-0.105)."""
    recs = bounce_dns()
    recs["dead.test"] = [("MX", "10 mx.dead.test", 60)]
    recs["mx.dead.test"] = [("A", "127.0.0.19", 60)]  # nothing listens
    net.records(recs)
    home = net.sink("127.0.0.8")
    m = net.relay(retry_schedule="1h", queue_lifetime="3s",
                  delay_warning_time="2s")
    for i in range(3):
        start = time.time()
        send(m, f"s{i}@src.test", [f"r{i}@dead.test"])
        n = m.log().count("event=delay_warning")
        warned = wait(lambda: m.log().count("event=delay_warning") > n
                      and time.time(), timeout=30, what="the warning")
        n = m.log().count("event=expired")
        expired = wait(lambda: m.log().count("event=expired") > n
                       and time.time(), timeout=30, what="the expiry")
        assert warned - start >= 2.0, warned - start
        assert expired - start >= 3.0, expired - start
    home.wait(6, timeout=30)
    delays = [float(d) for d in re.findall(r" delay=(-?[0-9.]+)", m.log())]
    assert delays and min(delays) >= 0, delays


def test_deadlines_come_behind_a_backed_off_destination(net):
    """CONTRACT §4 queue_lifetime, §2 delay_warning_time: every message
    queued behind a destination that refuses connections (backed off as a
    whole, one probe per backoff) gets its delay warning and expires at
    its own time, without waiting for a probe of its own and without an
    attempt counted for it.  Counts only: one warning per message, and
    per message the attempts logged with its expiry equal those of its
    last deferral (an expiry made by an attempt would count one more)."""
    recs = bounce_dns()
    recs["dead.test"] = [("MX", "10 mx.dead.test", 60)]
    recs["mx.dead.test"] = [("A", "127.0.0.19", 60)]  # nothing listens
    net.records(recs)
    home = net.sink("127.0.0.8")
    m = net.relay(retry_schedule="5s", queue_lifetime="15s",
                  delay_warning_time="6s")
    for i in range(6):
        send(m, f"s{i}@src.test", [f"r{i}@dead.test"])
    wait(lambda: m.log().count("event=expired") == 6 and queue_empty(m),
         timeout=120, what="six expiries and an empty queue")
    got = home.messages
    warned = sorted(x.rcpts[0][0] for x in got
                    if b"Action: delayed" in x.data)
    assert warned == [f"s{i}@src.test" for i in range(6)], warned
    bounced = [x for x in got if b"Action: failed" in x.data]
    assert len(bounced) == 6
    for x in bounced:
        _, _, f = parse_dsn(x.data)
        assert f["status"] == ["4.4.7"]
    last = {}
    expired = {}
    for line in m.log().splitlines():
        mo = re.search(r"event=(deferred|expired) id=(\w+) .*attempts=(\d+)",
                       line)
        if not mo:
            continue
        (last if mo[1] == "deferred" else expired)[mo[2]] = int(mo[3])
    assert len(expired) == 6
    # A probe may happen to land on the lifetime itself; the rest expire
    # without one.
    unattempted = [i for i, n in expired.items() if n == last.get(i, 0)]
    assert len(unattempted) >= 5, (expired, last)
    assert m.log().count("event=delay_warning") == 6


def test_flush_id_retries_the_named_message_behind_a_backoff(net):
    """`mailhop queue flush ID` on a message whose destination is backed
    off: that message is the destination's probe now, not another of its
    messages that was waiting longer."""
    net.records({"dead.test": [("MX", "10 mx.dead.test", 60)],
                 "mx.dead.test": [("A", "127.0.0.19", 60)]})
    m = net.relay(retry_schedule="1h")
    send(m, "a@src.test", ["first@dead.test"])
    wait(lambda: m.log().count("event=deferred") == 1, what="first attempt")
    # The destination is backed off for an hour: the second message waits,
    # never tried.
    send(m, "a@src.test", ["second@dead.test"])
    wait(lambda: len(rows(m, "select id from messages")) == 2)

    def rcpt(addr):
        return rows(m, "select message_id, attempts from recipients "
                    "where address = ?", addr)[0]
    first_id, n = rcpt("first@dead.test")
    assert n == 1
    r = m.cli("queue", "flush", first_id)
    assert r.returncode == 0, r.stderr
    assert "flushed 1 message" in r.stdout
    # The log line comes before the store write: wait for the store.
    wait(lambda: rcpt("first@dead.test")[1] == 2 or
         rcpt("second@dead.test")[1] == 1, what="the flush")
    assert rcpt("first@dead.test")[1] == 2
    assert rcpt("second@dead.test")[1] == 0
    last = [x for x in m.log().splitlines() if "event=deferred" in x][-1]
    assert f"id={first_id}" in last


def test_nxdomain_and_null_mx_bounce_at_once(net):
    recs = bounce_dns()
    recs["nullmx.test"] = [("MX", "0 .", 60)]
    net.records(recs)
    home = net.sink("127.0.0.8")
    m = net.relay()
    send(m, "alice@src.test", ["x@nxdomain.test"])
    send(m, "alice@src.test", ["y@nullmx.test"])
    dsns = home.wait(2)
    statuses = sorted(parse_dsn(d.data)[2]["status"][0] for d in dsns)
    assert statuses == ["5.1.10", "5.1.2"]


class SilentDNS:
    """A name server that does not answer: a UDP socket on loopback that
    reads every query and never replies (and refuses nothing)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while self.running:
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except socket.timeout:
                pass

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize("server", ["silent", "refusing"])
def test_dns_failure_defers(net, server):
    """A name server that does not answer (every query times out) or that
    refuses (ICMP port unreachable): a temporary failure. The recipient is
    deferred after exactly one attempt, with the DNS error as its reason;
    nothing bounces (no DSN is queued, the message stays)."""
    silent = SilentDNS() if server == "silent" else None
    try:
        dns = f"127.0.0.1:{silent.port}" if silent else \
            f"127.0.0.1:{free_closed_udp_port()}"
        m = net.relay(dns_servers=dns, dns_timeout="300ms",
                      retry_schedule="1h")
        send(m, "a@src.test", ["x@sf.test"])
        st = wait(lambda: [r for r in recipients(m) if r[1] == 1],
                  what="deferral")
        assert len(st) == 1, recipients(m)
        address, _, attempts, last_error = st[0]
        assert address == "x@sf.test"
        assert attempts == 1, st
        assert "sf.test" in last_error, last_error
        if silent:
            assert "timeout" in last_error, last_error
            assert silent.queries >= 1  # it was asked, and kept silent
        else:
            assert "refused" in last_error, last_error
        assert "event=deferred" in m.log()
        time.sleep(0.5)
        # No DSN: no bounce event, no second message, no recipient for the
        # sender; the one recipient is still deferred after one attempt.
        assert "event=bounced" not in m.log()
        assert rows(m, "select count(*) from messages")[0][0] == 1
        assert recipients(m) == [st[0]]
    finally:
        if silent:
            silent.stop()


def free_closed_udp_port():
    """A UDP port on 127.0.0.1 with nothing bound to it (queries to it are
    refused with ICMP port unreachable)."""
    return free_port(udp=True)


def test_relayhost_with_auth(net):
    relay_port = free_port()
    sink = Sink(host="127.0.0.1", port=relay_port, auth=("u", "s3cret"))
    try:
        m = net.relay(relayhost=f"[127.0.0.1]:{relay_port}",
                      relayhost_user="u", relayhost_password="s3cret",
                      relayhost_tls="none", relayhost_auth_plaintext="yes")
        send(m, "a@src.test", ["x@anything.example", "y@other.example"])
        msgs = sink.wait(1)
        assert sink.auth_seen == [("u", "s3cret")]
        wait(lambda: queue_empty(m))
        assert "s3cret" not in m.log()
        # Both domains went to the relayhost (one destination).
        assert sum(len(x.rcpts) for x in sink.messages) == 2
    finally:
        sink.stop()


def test_relayhost_not_resolving_defers_not_bounces(net):
    net.records(bounce_dns())
    home = net.sink("127.0.0.8")
    m = net.relay(relayhost="[nowhere.test]:2525", relayhost_tls="none")
    send(m, "alice@src.test", ["x@b.test"])
    st = wait(lambda: [r for r in recipients(m) if r[1] == 1],
              what="deferral")
    assert "nowhere.test" in st[0][3]
    time.sleep(1.5)
    assert home.messages == []
    assert "event=bounced" not in m.log()


def test_relayhost_failover_list(net):
    p1, p2 = free_port(), free_port()
    sink = Sink(host="127.0.0.1", port=p2)
    try:
        m = net.relay(relayhost=f"[127.0.0.1]:{p1}, [127.0.0.1]:{p2}",
                      relayhost_tls="none")
        send(m, "a@src.test", ["x@b.test"])
        sink.wait(1)
        # CONTRACT §4b: delivered says tls= even in plaintext.
        line = wait(lambda: [x for x in m.log().splitlines()
                             if "event=delivered" in x])[0]
        assert " tls=none tls_policy=none" in line, line
    finally:
        sink.stop()


def test_sigkill_during_delivery_then_restart(net):
    net.records({"k.test": [("A", "127.0.0.13", 60)]})
    slow = net.sink("127.0.0.13", data_delay=5)
    m = net.relay()
    send(m, "a@src.test", ["x@k.test"])
    wait(lambda: slow.connections > 0, what="delivery started")
    time.sleep(0.5)
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    slow.stop()
    time.sleep(0.2)
    fast = Sink(host="127.0.0.13", port=net.smtp_port)
    try:
        m2 = Mailhop(m.dir, **m.conf)
        m2.start()
        fast.wait(1)
        wait(lambda: queue_empty(m2))
        m2.stop()
    finally:
        fast.stop()


def test_sigterm_with_delivery_in_flight_exits_0(net):
    net.records({"t.test": [("A", "127.0.0.14", 60)]})
    net.sink("127.0.0.14", data_delay=30)
    m = net.relay(shutdown_timeout="1s")
    send(m, "a@src.test", ["x@t.test"])
    time.sleep(1)
    assert m.stop() == 0
    assert rows(m, "select count(*) from messages")[0][0] == 1


def test_smtp_source_to_smtp_sink_none_lost(net):
    sink_port = free_port()
    # (Its -c counter goes to stdout: never a pipe nobody reads.)
    p = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c",
                          f"127.0.0.1:{sink_port}", "100"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        m = net.relay(relayhost=f"[127.0.0.1]:{sink_port}",
                      relayhost_tls="none")
        n = 2000
        src = subprocess.run(
            ["smtp-source", "-s", "20", "-m", str(n), "-l", "1024",
             "-f", "s@a.example", "-t", "d@b.example",
             f"127.0.0.1:{m.port}"], capture_output=True, text=True,
            timeout=300)
        assert src.returncode == 0, src.stderr
        try:
            wait(lambda: queue_empty(m), timeout=120, what="queue drained")
        except AssertionError:
            print(m.log()[-3000:])
            raise
        delivered = m.log().count("event=delivered")
        assert delivered == n
    finally:
        p.terminate()
        p.wait(5)


def test_failing_destination_backed_off_as_a_whole(net):
    """50 messages to a relayhost answering 421: no connection storm; one
    probe per backoff step, nothing bounced."""
    p = free_port()
    busy = Sink(host="127.0.0.1", port=p, greeting="421 4.3.2 busy")
    try:
        m = net.relay(relayhost=f"[127.0.0.1]:{p}", relayhost_tls="none",
                      retry_schedule="30s")
        s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
        for i in range(50):
            s.sendmail("a@src.test", [f"r{i}@b.test"], "Subject: x\r\n\r\ny\r\n")
        s.quit()
        time.sleep(3)
        # At most one wave of max_per_destination (10) before the first
        # failure is known, then the destination waits 30 s.
        assert busy.connections <= 11, busy.connections
        assert "event=bounced" not in m.log()
        assert rows(m, "select count(*) from messages")[0][0] == 50
    finally:
        busy.stop()


def test_connection_dropped_during_data_is_retried(net):
    net.records({"drop.test": [("A", "127.0.0.16", 60)]})
    sink = net.sink("127.0.0.16", drop_in_data=1)
    m = net.relay()
    send(m, "a@src.test", ["x@drop.test"], "Subject: d\r\n\r\n" +
         "line\r\n" * 5000)
    (msg,) = sink.wait(1, timeout=30)
    assert msg.data.count(b"line\r\n") == 5000
    wait(lambda: queue_empty(m))
    assert "event=deferred" in m.log() and "event=delivered" in m.log()


@pytest.mark.parametrize("where", ["mail", "data"])
def test_5xx_to_mail_or_data_bounces(net, where):
    net.records(bounce_dns())
    kw = {"mail_reply": lambda s: "550 5.7.1 sender refused"} \
        if where == "mail" else \
        {"data_reply": lambda m: "554 5.6.0 content refused"}
    net.sink("127.0.0.7", **kw)
    home = net.sink("127.0.0.8")
    m = net.relay()
    send(m, "alice@src.test", ["x@b.test"])
    (dsn,) = home.wait(1)
    _, _, f = parse_dsn(dsn.data)
    assert f["status"] == (["5.7.1"] if where == "mail" else ["5.6.0"])
    wait(lambda: queue_empty(m))


def test_disk_full_answers_452(mailhop, tmp_path):
    """A queue on a 2 MiB file system: a message that does not fit gets
    452 4.3.1 and what was accepted before stays."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                        str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        # queue_minfree = 0: no reserve, so the store's own full-disk path
        # is what answers (the reserve has its own test_diskspace.py).
        m = mailhop(queue_path=str(d / "q.db"), queue_minfree="0")
        send(m, "a@src.test", ["x@b.test"], "Subject: small\r\n\r\nok\r\n")
        s = smtplib.SMTP("127.0.0.1", m.port, timeout=30)
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@src.test", ["y@b.test"],
                       "Subject: big\r\n\r\n" + ("z" * 998 + "\r\n") * 4000)
        assert e.value.smtp_code == 452
        assert b"4.3.1" in e.value.smtp_error
        s.quit()
        # The failure is logged with the session, envelope and real cause
        # (issue 12 item 1), not the spool's "Operation canceled".
        line = [l for l in m.log().splitlines() if "event=commit" in l][0]
        assert "session=S" in line and "id=" in line, line
        assert "from=a@src.test" in line and "No space left" in line, line
        assert "Operation canceled" not in m.log()
        assert rows(m, "select count(*) from messages")[0][0] == 1
        assert m.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(d)])

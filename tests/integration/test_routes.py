"""routes_file (issue 15; CONTRACT §4a) against the real binary: mail goes
by recipient domain and by sender to smarthosts of their own (real SMTP
sinks on loopback), each route with its own credentials, which never leak
to another route nor come from the global settings; relayhost=mx; bad
files are FILE:LINE errors (exit 1); SIGHUP reloads, and a bad file on
reload keeps the old routes."""
import signal

from conftest import free_port, run
from smtpsink import Sink
from test_delivery import net, queue_empty, recipients, send, wait  # noqa: F401

PW_A = "pw-A-7c1f0e"
PW_B = "pw-B-93ab2d"
PW_G = "pw-G-55e0aa"


class Sinks:
    def __init__(self):
        self.all = []

    def add(self, **kw):
        s = Sink(host="127.0.0.1", port=free_port(), **kw)
        self.all.append(s)
        return s

    def stop(self):
        for s in self.all:
            s.stop()


def plain(port):
    return f"relayhost=[127.0.0.1]:{port} relayhost_tls=none"


def authed(port, user, pwfile):
    return (plain(port) + " relayhost_auth_plaintext=yes "
            f"relayhost_user={user} relayhost_password_file={pwfile}")


def rcpts_of(sink):
    return sorted(a for m in sink.messages for a in m.addresses)


def test_routes_by_recipient_and_sender_with_own_credentials(net, tmp_path):
    net.records({"direct.test": [("MX", "10 mx.direct.test", 60)],
                 "mx.direct.test": [("A", "127.0.0.9", 60)]})
    direct = net.sink("127.0.0.9")
    sinks = Sinks()
    try:
        a = sinks.add(auth=("ua", PW_A))   # recipient:@partner.test
        b = sinks.add(auth=("ub", PW_B))   # sender:@billing.test
        c = sinks.add()                    # sender:ceo@billing.test, no AUTH
        g = sinks.add(auth=("ug", PW_G))   # the global relayhost
        (tmp_path / "pa").write_text(PW_A + "\n")
        (tmp_path / "pb").write_text(PW_B + "\n")
        routes = tmp_path / "routes"
        routes.write_text(
            "# partners over their own link\n"
            f"recipient:@partner.test {authed(a.port, 'ua', tmp_path / 'pa')}\n"
            "\n"
            f"sender:@billing.test {authed(b.port, 'ub', tmp_path / 'pb')}\n"
            f"sender:ceo@billing.test {plain(c.port)}\n"
            "recipient:@direct.test relayhost=mx\n")
        m = net.relay(routes_file=routes,
                      relayhost=f"[127.0.0.1]:{g.port}", relayhost_tls="none",
                      relayhost_auth_plaintext="yes", relayhost_user="ug",
                      relayhost_password=PW_G)
        # One message, two routes: the recipient route wins for x, the
        # sender route takes y, each in a transaction of its own.
        send(m, "a@billing.test", ["x@partner.test", "y@other.test"])
        # An exact sender address wins over the sender domain; the route
        # has no credentials and gets none (not b's, not the global ones).
        send(m, "ceo@BILLING.test", ["z@other.test"])
        # Unmatched: the global relayhost and its credentials.
        send(m, "plain@src.test", ["w@other.test"])
        # relayhost=mx: delivered by MX despite the global relayhost.
        send(m, "plain@src.test", ["d@direct.test"])
        wait(lambda: queue_empty(m), what="queue empty")
        assert rcpts_of(a) == ["x@partner.test"]
        assert rcpts_of(b) == ["y@other.test"]
        assert rcpts_of(c) == ["z@other.test"]
        assert rcpts_of(g) == ["w@other.test"]
        assert rcpts_of(direct) == ["d@direct.test"]
        assert set(a.auth_seen) == {("ua", PW_A)}
        assert set(b.auth_seen) == {("ub", PW_B)}
        assert c.auth_seen == []
        assert set(g.auth_seen) == {("ug", PW_G)}
        assert direct.auth_seen == []
        log = m.log()
        for pw in (PW_A, PW_B, PW_G):
            assert pw not in log
        # check prints the routes, never a password.
        r = run("check", "-c", str(m.dir / "mailhop.conf"))
        assert r.returncode == 0, r.stderr
        lines = [l for l in r.stdout.splitlines() if l.startswith("route = ")]
        assert len(lines) == 4
        assert lines[0].startswith("route = recipient:@partner.test "
                                   f"relayhost=[127.0.0.1]:{a.port} ")
        assert "relayhost_user=ua" in lines[0]
        assert lines[3] == "route = recipient:@direct.test relayhost=mx"
        for pw in (PW_A, PW_B, PW_G):
            assert pw not in r.stdout + r.stderr
        m.stop()
    finally:
        sinks.stop()


def test_route_targets_are_destinations_of_their_own(net, tmp_path):
    """Two routes to one sink with different credentials are two
    destinations: a refusal of one route's credentials backs off that
    route, not the other."""
    sinks = Sinks()
    try:
        a = sinks.add(auth=("ua", PW_A))
        (tmp_path / "good").write_text(PW_A + "\n")
        (tmp_path / "bad").write_text("wrong\n")
        routes = tmp_path / "routes"
        routes.write_text(
            f"sender:@good.test {authed(a.port, 'ua', tmp_path / 'good')}\n"
            f"sender:@bad.test {authed(a.port, 'ua', tmp_path / 'bad')}\n")
        m = net.relay(routes_file=routes, retry_schedule="1h")
        send(m, "x@bad.test", ["r1@other.test"])
        wait(lambda: [r for r in recipients(m) if r[1] == 1],
             what="deferral of the bad route")
        send(m, "x@good.test", ["r2@other.test"])
        wait(lambda: rcpts_of(a) == ["r2@other.test"], what="good route")
        st = recipients(m)
        assert [r[0] for r in st] == ["r1@other.test"] and st[0][1] == 1
        assert "535" in st[0][3]
        assert "event=bounced" not in m.log()
        m.stop()
    finally:
        sinks.stop()


def test_bad_routes_file_is_file_line_error(mailhop, tmp_path):
    routes = tmp_path / "routes"
    routes.write_text("# ok\nrecipient:@a.test relayhost=mx\n"
                      "sender:@b.test relayhost=[h.test]:25 relayhost_tls=none"
                      " relayhost_user=u relayhost_password_file=/nonexistent"
                      "\n")
    r = run("check", "-o", "hostname=relay.test", "-o", f"routes_file={routes}")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{routes}:3: relayhost_tls: credentials")
    routes.write_text("sender:@b.test relayhost=[h.test]:25 "
                      "relayhost_user=u relayhost_password_file=/nonexistent\n")
    r = run("check", "-o", "hostname=relay.test", "-o", f"routes_file={routes}")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{routes}:1: relayhost_password_file: "
                               "cannot read /nonexistent")
    routes.write_text("\n\nsender:@b.test relayhost=mx nonsense=1\n")
    m = mailhop(start=False, routes_file=routes)
    m.start(wait=False)
    assert m.proc.wait(20) == 1
    assert f"{routes}:3: 'nonsense': not a route setting" in m.log()
    r = run("check", "-o", "hostname=relay.test",
            "-o", f"routes_file={tmp_path / 'missing'}")
    assert r.returncode == 1 and "routes_file: cannot read" in r.stderr


def test_sighup_reloads_routes_and_keeps_them_when_bad(net, tmp_path):
    sinks = Sinks()
    try:
        one, two = sinks.add(), sinks.add()
        routes = tmp_path / "routes"
        routes.write_text(f"recipient:@p.test {plain(one.port)}\n")
        m = net.relay(routes_file=routes)
        send(m, "a@src.test", ["r1@p.test"])
        wait(lambda: rcpts_of(one) == ["r1@p.test"], what="first route")
        routes.write_text(f"recipient:@p.test {plain(two.port)}\n")
        m.proc.send_signal(signal.SIGHUP)
        m.wait_log("routes reloaded")
        send(m, "a@src.test", ["r2@p.test"])
        wait(lambda: rcpts_of(two) == ["r2@p.test"], what="reloaded route")
        routes.write_text(f"recipient:@p.test {plain(one.port)}\n"
                          "recipient:p.test relayhost=mx\n")
        m.proc.send_signal(signal.SIGHUP)
        m.wait_log("keeping the old routes")
        assert f"{routes}:2:" in m.log()
        send(m, "a@src.test", ["r3@p.test"])
        wait(lambda: rcpts_of(two) == ["r2@p.test", "r3@p.test"],
             what="old routes kept")
        assert rcpts_of(one) == ["r1@p.test"]
        m.stop()
    finally:
        sinks.stop()

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
        # (the sink has it before the queue has recorded it)
        wait(lambda: [r[0] for r in recipients(m)] == ["r1@other.test"],
             what="r2 recorded as delivered")
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


# ---- XOAUTH2 with mailhop as its own OAuth2 client (CONTRACT §4a) --------
# A real HTTPS token endpoint on loopback (python http.server, a test CA
# given as tls_ca_file) that checks the grant's form fields and counts the
# fetches, and the aiosmtpd smarthost of test_xoauth2 that accepts only
# the good token.

import json  # noqa: E402
import ssl  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa

from test_tls import (dns, finish, pki, queue_json, relay_conf,  # noqa: F401
                      submit, wait_deferred, wait_until)
from test_xoauth2 import BAD, GOOD, xoauth2_host  # noqa: E402

CLIENT_ID = "client-id-4f1d"
CLIENT_SECRET = "client-secret-9d2e77"
REFRESH = "1//refresh-token-0c8b51"
SCOPE = "https://outlook.office365.com/.default"


class TokenEndpoint:
    """answers: a list of (status, JSON object); the last one repeats."""

    def __init__(self, pki, answers, cert="server"):
        self.answers = list(answers)
        self.forms = []
        self.lock = threading.Lock()
        self.gate = threading.Event()  # cleared: requests wait for it
        self.gate.set()
        self.waiting = 0
        ep = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                with ep.lock:
                    ep.waiting += 1
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n).decode()
                ep.gate.wait(60)
                with ep.lock:
                    ep.forms.append({
                        "path": self.path,
                        "ctype": self.headers.get("Content-Type"),
                        "form": {k: v[0] for k, v in
                                 urllib.parse.parse_qs(body).items()}})
                    st, obj = (ep.answers.pop(0) if len(ep.answers) > 1
                               else ep.answers[0])
                out = json.dumps(obj).encode()
                self.send_response(st)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = pki.server_ctx(cert)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/oauth2/v2.0/token"
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    @property
    def fetches(self):
        with self.lock:
            return len(self.forms)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def token(tok, expires_in=3600):
    return (200, {"token_type": "Bearer", "expires_in": expires_in,
                  "access_token": tok})


def oauth_conf(pki, dns, sh, url, **kw):
    conf = relay_conf(pki, dns, sh.port, relayhost_auth="xoauth2",
                      relayhost_password="",
                      relayhost_oauth2_token_url=url,
                      relayhost_oauth2_client_id=CLIENT_ID,
                      relayhost_oauth2_client_secret=CLIENT_SECRET)
    conf.update(kw)
    return conf


def drop_kept_connections(m):
    """SIGHUP reloads the (empty) routes file, which closes the kept
    connections: the next message opens a new one and authenticates."""
    n = m.log().count("routes reloaded")
    m.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: m.log().count("routes reloaded") > n)


def secrets_absent(m, *extra):
    text = m.log() + json.dumps(queue_json(m))
    r = run("check", "-c", str(m.dir / "mailhop.conf"))
    text += r.stdout + r.stderr
    for s in (CLIENT_SECRET, REFRESH, GOOD, BAD) + extra:
        assert s not in text, s


def test_oauth2_refresh_token_grant_cached(mailhop, pki, dns, tmp_path):
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [token(GOOD)])
    try:
        (tmp_path / "refresh").write_text(REFRESH + "\n")
        (tmp_path / "routes").write_text("")
        m = mailhop(**oauth_conf(
            pki, dns, sh, ep.url, routes_file=tmp_path / "routes",
            relayhost_oauth2_refresh_token_file=tmp_path / "refresh"))
        submit(m)
        wait_until(lambda: len(sh.messages) == 1)
        wait_until(lambda: queue_json(m) == [])
        drop_kept_connections(m)
        submit(m, rcpt="carol@b.example")
        wait_until(lambda: len(sh.messages) == 2)
        wait_until(lambda: queue_json(m) == [])
        # One fetch for both: the token is kept until shortly before it
        # expires.
        assert ep.fetches == 1
        f = ep.forms[0]
        assert f["path"] == "/oauth2/v2.0/token"
        assert f["ctype"] == "application/x-www-form-urlencoded"
        assert f["form"] == {"grant_type": "refresh_token",
                             "refresh_token": REFRESH,
                             "client_id": CLIENT_ID,
                             "client_secret": CLIENT_SECRET}
        want = ("user=relayuser\x01auth=Bearer " + GOOD + "\x01\x01").encode()
        assert sh.initial == [want, want]
        r = run("check", "-c", str(m.dir / "mailhop.conf"))
        assert "relayhost_oauth2_refresh_token = <set>" in r.stdout
        assert "relayhost_oauth2_client_secret = <set>" in r.stdout
        secrets_absent(m)
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_oauth2_client_credentials_expiry_refetch(mailhop, pki, dns,
                                                  tmp_path):
    sh = xoauth2_host(pki)
    # expires_in 0: each token serves the connection it was fetched for.
    ep = TokenEndpoint(pki, [token(GOOD, expires_in=0)])
    try:
        (tmp_path / "routes").write_text("")
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url,
                                 routes_file=tmp_path / "routes",
                                 relayhost_oauth2_scope=SCOPE))
        submit(m)
        wait_until(lambda: len(sh.messages) == 1)
        wait_until(lambda: queue_json(m) == [])
        drop_kept_connections(m)
        submit(m, rcpt="carol@b.example")
        wait_until(lambda: len(sh.messages) == 2)
        assert len(sh.initial) == 2
        assert ep.fetches == 2
        for f in ep.forms:
            assert f["form"] == {"grant_type": "client_credentials",
                                 "client_id": CLIENT_ID,
                                 "client_secret": CLIENT_SECRET,
                                 "scope": SCOPE}
        secrets_absent(m)
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_oauth2_one_fetch_for_all_waiting(mailhop, pki, dns):
    """Deliveries that need a token while one is being fetched wait for
    that fetch; none starts another."""
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [token(GOOD)])
    ep.gate.clear()
    try:
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url))
        submit(m)
        wait_until(lambda: ep.waiting == 1)  # the fetch hangs
        submit(m, rcpt="carol@b.example")
        submit(m, rcpt="dave@b.example")

        def all_delivering():
            msgs = queue_json(m)
            return len(msgs) == 3 and all(
                r["state"] == "delivering"
                for msg in msgs for r in msg["recipients"])
        wait_until(all_delivering)
        ep.gate.set()
        wait_until(lambda: len(sh.messages) == 3)
        wait_until(lambda: queue_json(m) == [])
        assert ep.fetches == 1
        secrets_absent(m)
        finish(m)
    finally:
        ep.gate.set()
        ep.stop()
        sh.controller.stop()


def test_oauth2_refused_token_is_refetched(mailhop, pki, dns):
    """A refused token (the error challenge, then 535) is dropped and a new
    one fetched for the same host at once, once per delivery."""
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [token(BAD), token(GOOD)])
    try:
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url))
        submit(m)
        wait_until(lambda: sh.messages)
        wait_until(lambda: queue_json(m) == [])
        assert ep.fetches == 2
        ir = "user=relayuser\x01auth=Bearer {}\x01\x01"
        assert sh.initial == [ir.format(BAD).encode(),
                              ir.format(GOOD).encode()]
        assert sh.after_err == [b""]
        m.wait_log("refused the access token")
        assert "event=bounced" not in m.log()
        secrets_absent(m)
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_oauth2_token_refused_again_defers(mailhop, pki, dns):
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [token(BAD)])
    try:
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url))
        submit(m)
        rcpt = wait_deferred(m)
        assert "535" in rcpt["last_error"], rcpt
        # one new token for the same delivery, not more
        assert ep.fetches == 2 and len(sh.initial) == 2
        assert sh.messages == []
        # the next attempt fetches again
        assert m.cli("queue", "flush").returncode == 0
        wait_until(lambda: ep.fetches == 4)
        assert "event=bounced" not in m.log()
        secrets_absent(m)
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_oauth2_endpoint_failures_defer(mailhop, pki, dns):
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [(400, {"error": "invalid_grant",
                                    "error_description": "revoked"})])
    try:
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url,
                                 relayhost_oauth2_refresh_token=REFRESH))
        submit(m)
        rcpt = wait_deferred(m)
        assert "relayhost_oauth2_token_url" in rcpt["last_error"], rcpt
        assert "invalid_grant" in rcpt["last_error"], rcpt
        m.wait_log("token fetch failed")
        assert sh.initial == [] and sh.messages == []
        assert "event=bounced" not in m.log()
        secrets_absent(m)
        finish(m)
        # The endpoint down: deferred too.
        ep.stop()
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url))
        submit(m)
        rcpt = wait_deferred(m)
        assert "relayhost_oauth2_token_url" in rcpt["last_error"], rcpt
        assert "event=bounced" not in m.log()
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_oauth2_endpoint_not_trusted_defers(mailhop, pki, dns):
    """The endpoint's certificate is verified against tls_ca_file."""
    sh = xoauth2_host(pki)
    ep = TokenEndpoint(pki, [token(GOOD)], cert="untrusted")
    try:
        m = mailhop(**oauth_conf(pki, dns, sh, ep.url))
        submit(m)
        rcpt = wait_deferred(m)
        assert "relayhost_oauth2_token_url" in rcpt["last_error"], rcpt
        assert sh.initial == []
        finish(m)
    finally:
        ep.stop()
        sh.controller.stop()


def test_xoauth2_token_file_is_read_again(mailhop, pki, dns, tmp_path):
    sh = xoauth2_host(pki)
    try:
        tf = tmp_path / "token"
        tf.write_text(BAD + "\n")
        m = mailhop(**relay_conf(pki, dns, sh.port, relayhost_auth="xoauth2",
                                 relayhost_password="",
                                 relayhost_password_file=tf))
        submit(m)
        rcpt = wait_deferred(m)
        assert "535" in rcpt["last_error"], rcpt
        tf.write_text(GOOD + "\n")  # an outside refresher replaced it
        assert m.cli("queue", "flush").returncode == 0
        wait_until(lambda: sh.messages)
        wait_until(lambda: queue_json(m) == [])
        assert sh.initial[-1] == ("user=relayuser\x01auth=Bearer " + GOOD +
                                  "\x01\x01").encode()
        secrets_absent(m)
        finish(m)
    finally:
        sh.controller.stop()


def test_resolve_shows_the_route(tmp_path):
    routes = tmp_path / "routes"
    routes.write_text("# r\nsender:@billing.test relayhost=[127.0.0.1]:2600"
                      " relayhost_tls=none\n"
                      "recipient:@partner.test relayhost=mx\n")
    base = ["-o", "hostname=relay.test", "-o", "dns_servers=127.0.0.1:9",
            "-o", "dns_timeout=1s", "-o", f"routes_file={routes}",
            "-o", "relayhost=[127.0.0.2]:2700", "-o", "relayhost_tls=none"]
    r = run("resolve", "other.test", "--sender", "a@Billing.test", *base)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == f"route = sender:@billing.test ({routes}:2)"
    assert out[1] == "target = [127.0.0.1]:2600"
    assert "127.0.0.1" in out[2] and ":2600" in out[2]
    # Unmatched: the global settings.
    r = run("resolve", "other.test", "--sender", "a@else.test", *base)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["route = none",
                                         "target = [127.0.0.2]:2700"]
    # A recipient route wins over the sender's; mx resolves the domain
    # (no DNS server here: the lookup fails, exit 2, after the route).
    r = run("resolve", "partner.test", "--sender", "a@billing.test", *base)
    assert r.returncode == 2
    assert r.stdout.splitlines() == [f"route = recipient:@partner.test "
                                     f"({routes}:3)", "target = mx"]


def test_oauth2_shutdown_during_a_fetch(mailhop, pki, dns):
    """An endpoint that never answers: SIGTERM still ends mailhop cleanly
    (exit 0, nothing leaked), the mail stays queued."""
    import socket
    sh = xoauth2_host(pki)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(lsock.accept()[0])
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        url = f"https://127.0.0.1:{lsock.getsockname()[1]}/token"
        m = mailhop(**oauth_conf(pki, dns, sh, url, shutdown_timeout="1s"))
        submit(m)
        wait_until(lambda: accepted)
        finish(m)
        assert sh.initial == []
    finally:
        lsock.close()
        for c in accepted:
            c.close()
        sh.controller.stop()


def test_route_with_its_own_tls_and_xoauth2(mailhop, pki, dns, tmp_path):
    """A sender route to a smarthost over verified STARTTLS with XOAUTH2
    and a token file of its own (the route's defaults: starttls, verified
    against tls_ca_file); the global settings have no relayhost."""
    sh = xoauth2_host(pki)
    try:
        tf = tmp_path / "token"
        tf.write_text(GOOD + "\n")
        routes = tmp_path / "routes"
        routes.write_text(
            f"sender:@a.example relayhost=[relay.test]:{sh.port} "
            f"relayhost_auth=xoauth2 relayhost_user=relayuser "
            f"relayhost_password_file={tf}\n")
        m = mailhop(routes_file=routes, tls_ca_file=pki.ca,
                    dns_servers=dns.address, retry_schedule="1h")
        submit(m)  # from alice@a.example
        wait_until(lambda: sh.messages)
        env, was_tls, authed = sh.messages[0]
        assert was_tls and authed
        assert sh.initial == [("user=relayuser\x01auth=Bearer " + GOOD +
                               "\x01\x01").encode()]
        wait_until(lambda: queue_json(m) == [])
        secrets_absent(m)
        finish(m)
    finally:
        sh.controller.stop()


def test_route_rate_limits_its_destination_only(net, tmp_path):
    """A route's own `rate` (CONTRACT §4a): 2/1h on the route for
    limited.test lets 2 of its 5 messages through, the other 3 wait queued
    with no attempt (not deferred); mail on a route without a rate, sent at
    the same time, all goes."""
    import json
    import time
    sinks = Sinks()
    try:
        lim = sinks.add()
        free = sinks.add()
        routes = tmp_path / "routes"
        routes.write_text(
            f"recipient:@limited.test {plain(lim.port)} rate=2/1h\n"
            f"recipient:@free.test {plain(free.port)}\n")
        m = net.relay(routes_file=routes)
        for i in range(5):
            send(m, "a@src.test", [f"r{i}@limited.test"])
            send(m, "a@src.test", [f"r{i}@free.test"])
        wait(lambda: len(free.messages) == 5 and len(lim.messages) >= 2,
             what="the free route's 5 and the limited route's 2")
        time.sleep(2)  # ample time to (wrongly) send more
        assert len(lim.messages) == 2
        st = json.loads(m.cli("status", "--json").stdout)
        assert st["queue"]["recipients"] == 3, st
        assert st["queue"]["deferred"] == 0, st
        assert st["counters"]["deferred"] == 0, st
        assert m.stop() == 0
    finally:
        sinks.stop()

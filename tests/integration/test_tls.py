"""TLS both ways and SMTP AUTH (issue 6), black-box against the real binary.

Certificates are made at test time with the openssl CLI: a test CA, a
server certificate for mx.test / relay.test / 127.0.0.1 (IP SAN), a second
one for the SIGHUP reload, one for a wrong name, and a self-signed one from
an untrusted CA.  Clients: openssl s_client, swaks, Python's ssl module on
raw sockets.  Smarthosts: aiosmtpd (STARTTLS + AUTH, implicit TLS, plain
AUTH) and a tiny raw server injecting bytes after its STARTTLS 220.

Every test that stops mailhop asserts exit code 0: against the ASan build
(MAILHOP_BIN=build-asan/mailhop) that means LeakSanitizer found nothing.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import Raw, free_port, rows, run
from dnsserver import DNSServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # noqa: E402  (deprecated in 3.11, still the simplest way)

PASSWORD = "s3cret pass"
MAIL = b"Subject: tls test\r\n\r\nhello over tls\r\n"


# ---- certificates -----------------------------------------------------------

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, (args, r.stderr)
    return r


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, name, ca, sans):
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={sans}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
             "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt",
             "-days", "2", "-extfile", f"{name}.ext", cwd=d)


class PKI:
    def __init__(self, d):
        self.dir = d
        _make_ca(d, "ca")
        _make_ca(d, "rogue")
        good = "DNS:mx.test,DNS:relay.test,IP:127.0.0.1"
        _make_leaf(d, "server", "ca", good)
        _make_leaf(d, "server2", "ca", good)
        _make_leaf(d, "wrongname", "ca", "DNS:other.test")
        _make_leaf(d, "untrusted", "rogue", good)

    def path(self, name):
        return str(self.dir / name)

    @property
    def ca(self):
        return self.path("ca.crt")

    def server_ctx(self, name="server"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(f"{name}.crt"), self.path(f"{name}.key"))
        return ctx

    def client_ctx(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path):
    der = ssl.PEM_cert_to_DER_cert(open(path).read().split(
        "-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
    return fingerprint(der)


# ---- helpers ------------------------------------------------------------------

def tls_conf(pki, **kw):
    conf = {"tls_cert_file": pki.path("server.crt"),
            "tls_key_file": pki.path("server.key")}
    conf.update(kw)
    return conf


class TlsRaw(Raw):
    """Raw SMTP client that can switch its socket to TLS in place."""

    def starttls(self, ctx, server_hostname="mx.test"):
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        assert self.buf == b""
        self.wrap(ctx, server_hostname)

    def wrap(self, ctx, server_hostname="mx.test"):
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)


def tls_session(m, pki, ehlo="client.test"):
    """Connect, EHLO, STARTTLS, handshake: returns the TlsRaw (before the
    second EHLO)."""
    r = TlsRaw(m.port)
    assert r.reply()[0] == 220
    code, text = r.cmd(f"EHLO {ehlo}")
    assert code == 250 and "STARTTLS" in text, text
    r.starttls(pki.client_ctx())
    return r


def finish(m):
    """SIGTERM; exit 0 (under ASan: LeakSanitizer found no leak)."""
    rc = m.stop()
    log = m.log()
    assert "LeakSanitizer" not in log and "AddressSanitizer" not in log, log
    assert rc == 0, log


def queue_json(m):
    r = m.cli("queue", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["messages"]


def wait_until(fn, timeout=15, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {fn}")


def wait_deferred(m, timeout=15):
    def deferred():
        msgs = queue_json(m)
        if msgs and msgs[0]["recipients"][0]["state"] == "deferred":
            return msgs[0]["recipients"][0]
        return None
    return wait_until(deferred, timeout)


def submit(m, rcpt="bob@b.example"):
    """Plain SMTP from 127.0.0.1 (in relay_networks) into the queue."""
    r = Raw(m.port)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    assert r.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(MAIL + b".\r\n")
    code, text = r.reply()
    assert code == 250, text
    r.cmd("QUIT")
    r.close()


def swaks(*args, timeout=30):
    return subprocess.run(["swaks", *args], capture_output=True,
                          text=True, timeout=timeout)


def stored_bodies(m):
    return [b for (b,) in rows(m, "select body from messages")]


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


# ---- inbound: STARTTLS, implicit TLS ----------------------------------------

def test_s_client_starttls_handshake_tls12_min(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{m.port}", "-servername", "mx.test", "-CAfile", pki.ca,
         "-verify_return_error", "-verify_hostname", "mx.test", "-brief",
         "-crlf", "-ign_eof"],
        input="EHLO client.test\nQUIT\n", capture_output=True, text=True,
        timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Verification: OK" in out, out
    assert "Protocol version: TLSv1.3" in out or \
        "Protocol version: TLSv1.2" in out, out
    assert "\n221 " in out, out
    # TLS 1.2 explicitly, and TLS 1.1 refused by the server.
    r12 = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{m.port}", "-tls1_2", "-brief", "-crlf"],
        input="QUIT\n", capture_output=True, text=True, timeout=30)
    assert "Protocol version: TLSv1.2" in r12.stdout + r12.stderr, r12.stderr
    r11 = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{m.port}", "-tls1_1", "-cipher", "ALL:@SECLEVEL=0",
         "-brief", "-crlf"],
        input="QUIT\n", capture_output=True, text=True, timeout=30)
    assert r11.returncode != 0
    assert "Protocol version: TLSv1.1" not in r11.stdout + r11.stderr
    m.wait_log('error="unsupported protocol"')  # the server refused it
    finish(m)


def test_swaks_tls_delivers_into_queue_with_esmtps(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = swaks("--server", f"127.0.0.1:{m.port}", "--tls", "--ehlo",
              "client.test", "--from", "alice@a.example", "--to",
              "bob@b.example", "--body", "via swaks --tls")
    assert r.returncode == 0, r.stdout + r.stderr
    (body,) = stored_bodies(m)
    received = body.split(b"\r\n\r\n")[0].split(b"\r\nSubject")[0]
    received = received.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    assert received.startswith(b"Received: from client.test"), received
    assert b"with ESMTPS" in received, received
    assert b"TLSv1.3" in received or b"TLSv1.2" in received, received
    m.wait_log("event=tls")
    line = [l for l in m.log().splitlines() if "event=tls" in l][0]
    assert "version=TLSv1." in line and "cipher=" in line, line
    finish(m)


def test_swaks_tls_on_connect_listen_tls(mailhop, pki):
    tport = free_port()
    m = mailhop(**tls_conf(pki, listen_tls=f"127.0.0.1:{tport}"))
    r = swaks("--server", f"127.0.0.1:{tport}", "--tls-on-connect", "--ehlo",
              "client.test", "--from", "alice@a.example", "--to",
              "bob@b.example", "--body", "via tls-on-connect")
    assert r.returncode == 0, r.stdout + r.stderr
    (body,) = stored_bodies(m)
    assert b"with ESMTPS" in body.split(b"\r\n\r\n")[0]
    # Implicit TLS listener: verified handshake, no STARTTLS offered.
    with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
        r = TlsRaw.__new__(TlsRaw)
        r.sock, r.buf = pki.client_ctx().wrap_socket(
            s, server_hostname="mx.test"), b""
        assert r.reply()[0] == 220
        code, text = r.cmd("EHLO client.test")
        assert code == 250 and "STARTTLS" not in text, text
        assert r.cmd("QUIT")[0] == 221
    finish(m)


def test_ehlo_after_tls_no_starttls_and_state_reset(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = tls_session(m, pki)
    code, text = r.cmd("EHLO client.test")
    assert code == 250, text
    assert "STARTTLS" not in text, text
    code, text = r.cmd("STARTTLS")  # not twice
    assert code in (503, 554) and "5.5.1" in text, text
    assert r.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    assert r.cmd("RCPT TO:<bob@b.example>")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    finish(m)


def test_commands_injected_after_starttls_are_ignored(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = TlsRaw(m.port)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    # MAIL before STARTTLS would have given the session a sender...
    r.send("STARTTLS\r\nMAIL FROM:<x@y.example>\r\n")
    code, text = r.reply()
    assert code == 220, text
    assert r.buf == b""  # exactly one reply before the handshake
    r.wrap(pki.client_ctx())
    code, text = r.cmd("EHLO client.test")
    assert code == 250 and text.startswith("250-"), text  # reply to EHLO
    # ...but the injected MAIL was never executed.
    code, text = r.cmd("RCPT TO:<bob@b.example>")
    assert code == 503, text
    # And HELO/MAIL state from before TLS is forgotten too.
    assert r.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    assert "x@y.example" not in m.log()
    finish(m)


def test_starttls_forgets_helo(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = tls_session(m, pki)
    code, text = r.cmd("MAIL FROM:<alice@a.example>")
    assert code == 503, text  # EHLO needed again after STARTTLS
    finish(m)


def test_tls_handshake_garbage_and_abort_do_not_hurt(mailhop, pki):
    m = mailhop(**tls_conf(pki))
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("STARTTLS")[0] == 220
    r.send(b"\x16\x03\x01\x00\x05hello not tls\r\n" * 3)
    assert r.closed()
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("STARTTLS")[0] == 220
    r.close()  # hang up before the handshake
    m.wait_log("error=")
    r = tls_session(m, pki)
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    finish(m)


# ---- AUTH -----------------------------------------------------------------------

@pytest.fixture
def users(tmp_path):
    p = tmp_path / "users"
    sha = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    yes = crypt.crypt(PASSWORD, "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$")
    assert sha.startswith("$6$") and yes.startswith("$y$")
    p.write_text(f"alice:{sha}\nbob:{yes}\n")
    return str(p)


def auth_conf(pki, users, **kw):
    return tls_conf(pki, auth_users_file=users, relay_networks="10.0.0.0/8",
                    **kw)


def test_auth_not_offered_before_tls_538(mailhop, pki, users):
    m = mailhop(**auth_conf(pki, users))
    r = Raw(m.port)
    r.reply()
    code, text = r.cmd("EHLO client.test")
    assert "AUTH" not in text, text
    code, text = r.cmd("AUTH PLAIN " + b64(f"\0alice\0{PASSWORD}"))
    assert code == 538 and "5.7.11" in text, text
    r.close()
    finish(m)


def test_auth_plain_and_login_after_tls(mailhop, pki, users):
    m = mailhop(**auth_conf(pki, users))
    r = tls_session(m, pki)
    code, text = r.cmd("EHLO client.test")
    assert "AUTH" in text and "PLAIN" in text and "LOGIN" in text, text
    code, text = r.cmd("AUTH PLAIN " + b64(f"\0alice\0{PASSWORD}"))
    assert code == 235, text
    r.close()
    # LOGIN with the yescrypt user, in three steps.
    r = tls_session(m, pki)
    r.cmd("EHLO client.test")
    code, text = r.cmd("AUTH LOGIN")
    assert code == 334, text
    assert r.cmd(b64("bob"))[0] == 334
    code, text = r.cmd(b64(PASSWORD))
    assert code == 235, text
    r.close()
    m.wait_log("event=auth")
    assert PASSWORD not in m.log()
    finish(m)


def test_auth_wrong_password_535(mailhop, pki, users):
    m = mailhop(**auth_conf(pki, users))
    r = tls_session(m, pki)
    r.cmd("EHLO client.test")
    code, text = r.cmd("AUTH PLAIN " + b64("\0alice\0wrong"))
    assert code == 535 and "5.7.8" in text, text
    code, text = r.cmd("AUTH PLAIN " + b64("\0nosuch\0wrong"))
    assert code == 535 and "5.7.8" in text, text
    # Not authenticated: relay from outside relay_networks is refused.
    assert r.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    code, text = r.cmd("RCPT TO:<bob@far.example>")
    assert code == 554 and "5.7.1" in text, text
    r.close()
    finish(m)


def test_authenticated_client_may_relay(mailhop, pki, users):
    m = mailhop(**auth_conf(pki, users))
    r = tls_session(m, pki)
    r.cmd("EHLO client.test")
    assert r.cmd("AUTH PLAIN " + b64(f"\0alice\0{PASSWORD}"))[0] == 235
    assert r.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    code, text = r.cmd("RCPT TO:<bob@far.example>")
    assert code == 250, text
    assert r.cmd("DATA")[0] == 354
    r.send(MAIL + b".\r\n")
    assert r.reply()[0] == 250
    r.cmd("QUIT")
    (body,) = stored_bodies(m)
    assert b"with ESMTPSA" in body.split(b"\r\n\r\n")[0]
    finish(m)


def test_swaks_auth(mailhop, pki, users):
    m = mailhop(**auth_conf(pki, users))
    for mech in ("PLAIN", "LOGIN"):
        r = swaks("--server", f"127.0.0.1:{m.port}", "--tls", "--auth", mech,
                  "--auth-user", "alice", "--auth-password", PASSWORD,
                  "--ehlo", "client.test", "--from", "alice@a.example",
                  "--to", "bob@far.example", "--body", f"swaks auth {mech}")
        assert r.returncode == 0, r.stdout + r.stderr
    assert len(stored_bodies(m)) == 2
    r = swaks("--server", f"127.0.0.1:{m.port}", "--tls", "--auth", "PLAIN",
              "--auth-user", "alice", "--auth-password", "nope",
              "--from", "alice@a.example", "--to", "bob@far.example")
    # 28 is swaks' "error in AUTH transaction": not a missing module (10),
    # a TLS failure (29) or no connection (2).
    assert r.returncode == 28, r.stdout + r.stderr
    assert "535" in r.stdout, r.stdout + r.stderr
    finish(m)


def test_hash_checks_run_off_the_loop(mailhop, pki, tmp_path):
    """A correct AUTH against a slow yescrypt hash (about 0.2 s): a NOOP
    another client sends after it is answered while the 235 is still
    outstanding, which cannot happen if the hash ran on the loop thread.
    Checked by order, not by time, while 8 clients keep failing AUTH
    against the same kind of hash, so the pool (two at a time) always has a
    queue (the worst NOOP round trip is printed). No bound on how long a
    hash waits its turn: that depends on the machine's load."""
    import select
    slow = crypt.crypt(PASSWORD, "$y$jCT$F5Jx5fExrKuPp53xLKQ..1$")
    assert slow.startswith("$y$jCT$")
    users = tmp_path / "slow-users"
    users.write_text(f"carol:{slow}\nbob:{slow}\n")
    m = mailhop(**auth_conf(pki, str(users)))
    stop = threading.Event()
    attempts = []

    def session():
        r = tls_session(m, pki)
        r.sock.settimeout(120)  # a hash may wait long for its turn
        r.cmd("EHLO client.test")
        return r

    def attacker():
        r = session()
        while not stop.is_set():
            code, text = r.cmd("AUTH PLAIN " + b64("\0bob\0wrong"))
            attempts.append(code)
            if code == 421:
                r = session()
        r.close()

    threads = [threading.Thread(target=attacker) for _ in range(8)]
    for t in threads:
        t.start()
    worst = 0.0
    probe = None
    try:
        for _ in range(5):
            # A fresh probe each round: it is never idle long enough for
            # smtp_timeout, however long the last hash waited.
            if probe:
                probe.close()
            probe = Raw(m.port)
            probe.reply()
            probe.cmd("EHLO probe.test")
            a = tls_session(m, pki)
            a.cmd("EHLO client.test")
            a.send("AUTH PLAIN " + b64("\0carol\0" + PASSWORD) + "\r\n")
            time.sleep(0.02)  # the AUTH is at the server, hashing
            t0 = time.time()
            assert probe.cmd("NOOP")[0] == 250
            worst = max(worst, time.time() - t0)
            # The NOOP was answered; the 235 has not arrived yet.
            readable, _, _ = select.select([a.sock], [], [], 0)
            assert not readable and a.buf == b"", "hash ran on the loop"
            # Its hash waits its turn behind the attackers' (two at a time):
            # seconds on a loaded 2-core machine under ASan.
            a.sock.settimeout(120)
            code, text = a.reply()
            assert code == 235, text
            a.close()
    finally:
        stop.set()
        for t in threads:
            t.join(150)
        if probe:
            probe.close()
    assert attempts and set(attempts) <= {535, 454, 421}, set(attempts)
    print(f"worst NOOP round trip {worst * 1000:.1f} ms, "
          f"{len(attempts)} failed AUTH attempts meanwhile")
    finish(m)


def test_tls_handshake_timeout(mailhop, pki):
    tport = free_port()
    m = mailhop(**tls_conf(pki, listen_tls=f"127.0.0.1:{tport}",
                           smtp_timeout="1s"))
    silent = socket.create_connection(("127.0.0.1", tport), timeout=10)
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("STARTTLS")[0] == 220
    t0 = time.time()
    assert r.closed(timeout=8)
    silent.settimeout(8)
    assert silent.recv(100) == b""
    assert time.time() - t0 < 8
    silent.close()
    finish(m)


# ---- outbound: the relayhost -------------------------------------------------

class Smarthost:
    """aiosmtpd handler recording messages and the AUTH credentials."""

    def __init__(self):
        self.messages = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.ssl is not None,
                              session.authenticated))
        return "250 2.0.0 OK"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((mechanism, auth_data.login.decode(),
                            auth_data.password.decode(),
                            session.ssl is not None))
        ok = (auth_data.login == b"relayuser"
              and auth_data.password == PASSWORD.encode())
        return AuthResult(success=ok)


def smarthost(pki, cert="server", implicit=False, tls=True,
              host="127.0.0.1"):
    h = Smarthost()
    kw = dict(hostname=host, port=free_port(host),
              authenticator=h.authenticator, auth_required=True)
    if implicit:
        kw["ssl_context"] = pki.server_ctx(cert)
        kw["server_hostname"] = "relay.test"
        # aiosmtpd only counts STARTTLS as TLS; this one is TLS throughout.
        kw["auth_require_tls"] = False
    elif tls:
        kw.update(tls_context=pki.server_ctx(cert), require_starttls=True)
    else:
        kw["auth_require_tls"] = False
    c = Controller(h, **kw)
    c.start()
    h.controller = c
    h.port = c.port
    return h


@pytest.fixture
def dns():
    with DNSServer({"relay.test": [("A", "127.0.0.1", 60)]}) as srv:
        yield srv


def relay_conf(pki, dns, port, name="relay.test", **kw):
    conf = {"relayhost": f"[{name}]:{port}", "relayhost_tls": "starttls",
            "tls_ca_file": pki.ca, "relayhost_user": "relayuser",
            "relayhost_password": PASSWORD, "retry_schedule": "1h",
            "dns_servers": dns.address if dns else "127.0.0.1:9"}
    conf.update(kw)
    return conf


def test_relay_starttls_auth_by_name(mailhop, pki, dns):
    sh = smarthost(pki)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port))
        submit(m)
        wait_until(lambda: sh.messages)
        env, was_tls, authed = sh.messages[0]
        assert was_tls and authed
        assert env.mail_from == "alice@a.example"
        assert env.rcpt_tos == ["bob@b.example"]
        assert b"hello over tls" in env.content
        assert sh.logins[0][1:] == ("relayuser", PASSWORD, True)
        wait_until(lambda: queue_json(m) == [])
        m.wait_log("event=delivered")
        tls_lines = [l for l in m.log().splitlines()
                     if "event=tls" in l and "outbound" in l]
        assert tls_lines, m.log()
        assert PASSWORD not in m.log()
        finish(m)
    finally:
        sh.controller.stop()


def test_relay_starttls_ip_san(mailhop, pki):
    sh = smarthost(pki)
    try:
        m = mailhop(**relay_conf(pki, None, sh.port, name="127.0.0.1"))
        submit(m)
        wait_until(lambda: sh.messages)
        assert sh.messages[0][1] and sh.messages[0][2]
        finish(m)
    finally:
        sh.controller.stop()


@pytest.mark.parametrize("cert", ["untrusted", "wrongname"])
def test_relay_starttls_bad_certificate_defers(mailhop, pki, dns, cert):
    sh = smarthost(pki, cert=cert)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port))
        submit(m)
        rc = wait_deferred(m)
        err = rc["last_error"]
        assert "certificate" in err.lower() or "verif" in err.lower(), err
        assert "relay.test" in err or "127.0.0.1" in err, err
        assert sh.messages == [] and sh.logins == []
        finish(m)
    finally:
        sh.controller.stop()


class InjectingServer:
    """Says `220 ready\\r\\n250 injected\\r\\n` in one write to STARTTLS."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.transcript = []
        self.closed_after_inject = threading.Event()
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(10)
                f = c.makefile("rb")
                c.sendall(b"220 inject.test ESMTP\r\n")
                try:
                    while True:
                        line = f.readline()
                        if not line:
                            break
                        self.transcript.append(line)
                        verb = line[:4].upper()
                        if verb == b"EHLO":
                            c.sendall(b"250-inject.test\r\n250-PIPELINING\r\n"
                                      b"250 STARTTLS\r\n")
                        elif verb == b"STAR":
                            c.sendall(b"220 ready\r\n250 injected\r\n")
                        elif verb == b"QUIT":
                            c.sendall(b"221 bye\r\n")
                            break
                        else:
                            c.sendall(b"502 no\r\n")
                    if f.read() == b"":
                        self.closed_after_inject.set()
                except OSError:
                    self.closed_after_inject.set()

    def stop(self):
        self.sock.close()


def test_relay_starttls_response_injection_refused(mailhop, pki, dns):
    srv = InjectingServer()
    try:
        m = mailhop(**relay_conf(pki, dns, srv.port))
        submit(m)
        rc = wait_deferred(m)
        assert "injection" in rc["last_error"], rc
        # Nothing after STARTTLS in plaintext: no MAIL, no AUTH, no creds.
        verbs = [l.split()[0].upper() for l in srv.transcript]
        assert b"STARTTLS" in verbs
        assert verbs.index(b"STARTTLS") >= len(verbs) - 2, srv.transcript
        assert not any(v in (b"MAIL", b"AUTH", b"RCPT") for v in verbs)
        finish(m)
    finally:
        srv.stop()


def test_relay_implicit_tls(mailhop, pki, dns):
    sh = smarthost(pki, implicit=True)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port, relayhost_tls="implicit"))
        submit(m)
        wait_until(lambda: sh.messages)
        assert sh.messages[0][2]  # authenticated
        assert sh.logins[0][1:3] == ("relayuser", PASSWORD)
        finish(m)
    finally:
        sh.controller.stop()


def test_relay_none_with_plaintext_auth(mailhop, pki, dns):
    sh = smarthost(pki, tls=False)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port, relayhost_tls="none",
                                 relayhost_auth_plaintext="yes"))
        submit(m)
        wait_until(lambda: sh.messages)
        env, was_tls, authed = sh.messages[0]
        assert not was_tls and authed
        assert sh.logins[0][1:] == ("relayuser", PASSWORD, False)
        finish(m)
    finally:
        sh.controller.stop()


def test_relay_none_auth_without_plaintext_is_config_error(tmp_path, pki):
    conf = tmp_path / "c.conf"
    conf.write_text("relayhost = [127.0.0.1]:2\nrelayhost_tls = none\n"
                    "relayhost_user = u\nrelayhost_password = p\n"
                    f"queue_path = {tmp_path}/q.db\n"
                    f"admin_socket = {tmp_path}/a.sock\n")
    r = run("check", "-c", str(conf))
    assert r.returncode == 1, r.stdout + r.stderr


# ---- outbound: MX delivery, outbound_tls -----------------------------------

class MxSink:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.ssl is not None))
        return "250 2.0.0 OK"


def mx_sink(pki, cert="untrusted", tls=True, client_cert_required=False):
    h = MxSink()
    h.messages = []
    kw = dict(hostname="127.0.0.1", port=free_port())
    if tls:
        ctx = pki.server_ctx(cert)
        if client_cert_required:  # no handshake can succeed with mailhop
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki.ca)
            # TLS 1.2: the failure comes inside the handshake (with 1.3 the
            # client only learns of it after its Finished).
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        kw["tls_context"] = ctx
    c = Controller(h, **kw)
    c.start()
    h.controller = c
    h.port = c.port
    return h


def mx_conf(port, dnsrv, policy):
    dnsrv.set_records({"b.test": [("MX", "10 mx.b.test", 60)],
                       "mx.b.test": [("A", "127.0.0.1", 60)]})
    return {"smtp_port": port, "dns_servers": dnsrv.address,
            "outbound_tls": policy, "retry_schedule": "1h"}


def test_mx_opportunistic_accepts_any_certificate(mailhop, pki, dns):
    sh = mx_sink(pki, cert="untrusted")
    try:
        m = mailhop(**mx_conf(sh.port, dns, "opportunistic"))
        submit(m, "bob@b.test")
        wait_until(lambda: sh.messages)
        assert sh.messages[0][1], "not delivered over TLS"
        m.wait_log("event=delivered")
        line = [l for l in m.log().splitlines()
                if "event=tls" in l and "outbound" in l][0]
        assert "verified=0" in line, line
        finish(m)
    finally:
        sh.controller.stop()


def test_mx_opportunistic_falls_back_to_plaintext(mailhop, pki, dns):
    sh = mx_sink(pki, cert="server", client_cert_required=True)
    try:
        m = mailhop(**mx_conf(sh.port, dns, "opportunistic"))
        submit(m, "bob@b.test")
        wait_until(lambda: sh.messages)
        assert not sh.messages[0][1]
        finish(m)
    finally:
        sh.controller.stop()


@pytest.mark.parametrize("kind", ["no_starttls", "untrusted"])
def test_mx_required_defers(mailhop, pki, dns, kind):
    sh = mx_sink(pki, cert="untrusted", tls=kind != "no_starttls")
    try:
        m = mailhop(**mx_conf(sh.port, dns, "required"))
        submit(m, "bob@b.test")
        err = wait_deferred(m)["last_error"]
        if kind == "no_starttls":
            assert "STARTTLS" in err, err
        else:
            assert "certif" in err.lower() or "verif" in err.lower(), err
        assert sh.messages == []
        finish(m)
    finally:
        sh.controller.stop()


# ---- SIGHUP, start-up errors ---------------------------------------------------

def test_sighup_reloads_certificate_sessions_survive(mailhop, pki, tmp_path):
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki.path("server.crt"), crt)
    shutil.copy(pki.path("server.key"), key)
    m = mailhop(tls_cert_file=crt, tls_key_file=key)
    old = tls_session(m, pki)
    assert old.cmd("EHLO client.test")[0] == 250
    assert fingerprint(old.sock.getpeercert(binary_form=True)) == \
        file_fingerprint(pki.path("server.crt"))
    # A plaintext session in the middle of a transaction, too.
    plain = Raw(m.port)
    plain.reply()
    plain.cmd("EHLO client.test")
    assert plain.cmd("MAIL FROM:<alice@a.example>")[0] == 250

    shutil.copy(pki.path("server2.crt"), crt)
    shutil.copy(pki.path("server2.key"), key)
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("reload")

    new = tls_session(m, pki)
    assert fingerprint(new.sock.getpeercert(binary_form=True)) == \
        file_fingerprint(pki.path("server2.crt"))
    # s_client agrees
    r = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{m.port}", "-CAfile", pki.ca, "-verify_return_error"],
        input="QUIT\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                        "-sha256"], input=r.stdout, capture_output=True,
                       text=True)
    y = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                        "-sha256", "-in", pki.path("server2.crt")],
                       capture_output=True, text=True)
    assert x.stdout and x.stdout == y.stdout
    # The old sessions keep going.
    assert old.cmd("MAIL FROM:<alice@a.example>")[0] == 250
    assert old.cmd("RCPT TO:<bob@b.example>")[0] == 250
    assert old.cmd("DATA")[0] == 354
    old.send(MAIL + b".\r\n")
    assert old.reply()[0] == 250
    assert plain.cmd("RCPT TO:<bob@b.example>")[0] == 250
    assert plain.cmd("QUIT")[0] == 221
    for r_ in (old, new):
        assert r_.cmd("QUIT")[0] == 221

    # A broken replacement is refused; the current certificate stays.
    key.write_text("garbage\n")
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("keeping the old certificate")
    again = tls_session(m, pki)
    assert fingerprint(again.sock.getpeercert(binary_form=True)) == \
        file_fingerprint(pki.path("server2.crt"))
    again.close()
    finish(m)


@pytest.mark.parametrize("what", ["garbage", "mismatch", "missing"])
def test_bad_key_at_startup_exits_nonzero_naming_file(mailhop, pki, tmp_path,
                                                       what):
    key = tmp_path / "bad.key"
    if what == "garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n"
                       "-----END PRIVATE KEY-----\n")
    elif what == "mismatch":
        shutil.copy(pki.path("server2.key"), key)
    m = mailhop(start=False, tls_cert_file=pki.path("server.crt"),
                tls_key_file=key)
    m.start(wait=False)
    rc = m.proc.wait(20)
    m.stop()
    assert rc != 0, m.log()
    errors = [l for l in m.log().splitlines() if str(key) in l]
    assert len(errors) == 1, m.log()
    assert "event=listening" not in m.log()


def test_tls_without_key_or_listen_tls_without_cert_is_config_error(tmp_path):
    base = (f"queue_path = {tmp_path}/q.db\n"
            f"admin_socket = {tmp_path}/a.sock\n")
    conf = tmp_path / "c.conf"
    conf.write_text(base + f"listen_tls = 127.0.0.1:{free_port()}\n")
    r = run("check", "-c", str(conf))
    assert r.returncode == 1, r.stdout
    conf.write_text(base + "tls_cert_file = /nonexistent.crt\n")
    r = run("check", "-c", str(conf))
    assert r.returncode == 1, r.stdout


# ---- many sessions (LeakSanitizer under build-asan) --------------------------

def test_many_tls_sessions_then_clean_exit(mailhop, pki):
    tport = free_port()
    m = mailhop(**tls_conf(pki, listen_tls=f"127.0.0.1:{tport}"))
    ctx = pki.client_ctx()
    errors = []

    def worker(k, n):
        try:
            for i in range(n):
                kind = (k + i) % 5
                if kind == 0:      # implicit TLS, full mail
                    s = ctx.wrap_socket(socket.create_connection(
                        ("127.0.0.1", tport), timeout=10),
                        server_hostname="mx.test")
                    r = TlsRaw.__new__(TlsRaw)
                    r.sock, r.buf = s, b""
                    assert r.reply()[0] == 220
                    r.cmd("EHLO c.test")
                    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
                    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
                    assert r.cmd("DATA")[0] == 354
                    r.send(MAIL + b".\r\n")
                    assert r.reply()[0] == 250
                    r.cmd("QUIT")
                    r.close()
                elif kind == 1:    # STARTTLS then QUIT
                    r = tls_session(m, pki)
                    r.cmd("EHLO c.test")
                    assert r.cmd("QUIT")[0] == 221
                    r.close()
                elif kind == 2:    # STARTTLS then hang up without close_notify
                    r = tls_session(m, pki)
                    r.close()  # Python's close sends no close_notify
                elif kind == 3:    # hang up mid-handshake
                    s = socket.create_connection(("127.0.0.1", tport),
                                                 timeout=10)
                    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                    s.close()
                else:              # STARTTLS, then plaintext garbage
                    r = Raw(m.port)
                    r.reply()
                    r.cmd("EHLO c.test")
                    assert r.cmd("STARTTLS")[0] == 220
                    r.send(b"EHLO not tls\r\n")
                    assert r.closed(30), "plaintext after STARTTLS kept open"
                    r.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    # MAILHOP_TLS_SESSIONS=1000 for the full LeakSanitizer run.
    total = int(os.environ.get("MAILHOP_TLS_SESSIONS", "200"))
    threads = [threading.Thread(target=worker, args=(k, total // 4))
               for k in range(4)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert time.time() - t0 < 60 * max(1, total // 200)
    assert len(stored_bodies(m)) == total // 5
    finish(m)


def test_sighup_reloads_outbound_trust_anchors(mailhop, pki, dns, tmp_path):
    """A smarthost whose CA is not trusted yet: deferred; the CA file gains
    its CA, SIGHUP, flush: delivered."""
    import shutil
    sh = smarthost(pki, cert="untrusted")
    try:
        cafile = tmp_path / "trust.pem"
        shutil.copy(pki.ca, cafile)
        m = mailhop(**relay_conf(pki, dns, sh.port, tls_ca_file=str(cafile)))
        submit(m)
        wait_deferred(m)
        assert sh.messages == []
        with open(cafile, "a") as f:
            f.write(open(pki.path("rogue.crt")).read())
        m.proc.send_signal(signal.SIGHUP)
        m.wait_log("trust anchors reloaded")
        assert m.cli("queue", "flush").returncode == 0
        wait_until(lambda: sh.messages, timeout=20)
        finish(m)
    finally:
        sh.controller.stop()

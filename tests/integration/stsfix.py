"""Shared parts of the MTA-STS and TLS-RPT tests (CONTRACT §4b): a test CA
with certificates for the MX hosts and the mta-sts.DOMAIN policy hosts, an
HTTPS policy server on loopback (python http.server), a TLS SMTP sink
(aiosmtpd) and a DNS server (dnslib) on loopback."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port
from dnsserver import DNSServer
from test_tls import _make_ca, _make_leaf
import ssl

DOMAINS = ["enf.test", "bad.test", "tst.test", "big.test", "redir.test",
           "slow.test", "gone.test", "rua.test", "plain.test"]


class StsPKI:
    """A CA; "mx" holds every mx.DOMAIN and mx2.DOMAIN; "web" every
    mta-sts.DOMAIN."""

    def __init__(self, d):
        self.dir = d
        _make_ca(d, "ca")
        _make_leaf(d, "mx", "ca", ",".join(
            f"DNS:mx.{x},DNS:mx2.{x}" for x in DOMAINS))
        _make_leaf(d, "web", "ca", ",".join(
            f"DNS:mta-sts.{x}" for x in DOMAINS))

    def path(self, name):
        return str(self.dir / name)

    @property
    def ca(self):
        return self.path("ca.crt")

    def server_ctx(self, name):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(f"{name}.crt"), self.path(f"{name}.key"))
        return ctx


@pytest.fixture(scope="module")
def spki(tmp_path_factory):
    return StsPKI(tmp_path_factory.mktemp("stspki"))


def policy(mode, *mx, max_age=86400):
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {m}" for m in mx]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


class PolicyServer:
    """Serves /.well-known/mta-sts.txt per Host header: policies[domain]
    is the text, or ("redirect", URL), ("status", N), ("slow",) (waits
    until release()), ("big", N) (N bytes of a valid-looking policy), ("type", CT, TEXT)
    (TEXT served with Content-Type CT; None: no Content-Type at all)."""

    def __init__(self, spki):
        self.policies = {}
        self.hits = {}
        self.lock = threading.Lock()
        self.release_ev = threading.Event()
        srv = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                dom = host[len("mta-sts."):] if host.startswith("mta-sts.") \
                    else host
                with srv.lock:
                    srv.hits[dom] = srv.hits.get(dom, 0) + 1
                    p = srv.policies.get(dom)
                if self.path != "/.well-known/mta-sts.txt" or p is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if isinstance(p, tuple) and p[0] == "slow":
                    srv.release_ev.wait(120)
                    p = p[1]
                if isinstance(p, tuple) and p[0] == "redirect":
                    self.send_response(301)
                    self.send_header("Location", p[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if isinstance(p, tuple) and p[0] == "status":
                    self.send_response(p[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype = "text/plain"
                if isinstance(p, tuple) and p[0] == "type":
                    ctype, p = p[1], p[2]
                body = p.encode()
                self.send_response(200)
                if ctype is not None:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        ctx = spki.server_ctx("web")
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def hit(self, dom):
        with self.lock:
            return self.hits.get(dom, 0)

    def stop(self):
        self.release_ev.set()
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def web(spki):
    s = PolicyServer(spki)
    yield s
    s.stop()


class _Handler:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.ssl is not None))
        return "250 2.0.0 OK"


@pytest.fixture
def sink(spki):
    """The MX of every test domain: STARTTLS with the "mx" certificate."""
    h = _Handler()
    c = Controller(h, hostname="127.0.0.1", port=free_port(),
                   tls_context=spki.server_ctx("mx"))
    c.start()
    h.port = c.port
    yield h
    c.stop()


def zone(**extra):
    """MX and A records for the test domains; _mta-sts TXT from extra."""
    recs = {}
    for d in DOMAINS:
        recs[d] = [("MX", f"10 mx.{d}", 60)]
        recs[f"mx.{d}"] = [("A", "127.0.0.1", 60)]
        recs[f"mx2.{d}"] = [("A", "127.0.0.1", 60)]
        recs[f"mta-sts.{d}"] = [("A", "127.0.0.1", 60)]
    recs.update(extra)
    return recs


def txt(value):
    return [("TXT", value, 0)]


@pytest.fixture
def dns():
    with DNSServer(zone()) as srv:
        yield srv


def sts_conf(spki, dns, web, sink, **kw):
    conf = {"smtp_port": sink.port, "dns_servers": dns.address,
            "https_port": web.port, "tls_ca_file": spki.ca,
            "outbound_tls": "opportunistic", "retry_schedule": "1h"}
    conf.update(kw)
    return conf


def wait_until(fn, timeout=30, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


def delivered_to(sink, rcpt):
    return [e for e, tls in sink.messages if rcpt in e.rcpt_tos]

"""DANE for outbound SMTP (RFC 7672, CONTRACT §4b, issue 17) against a real
validating resolver.

The DNS is real: zones signed at test time with ldns-keygen/ldns-signzone,
served by nsd on loopback, and unbound on loopback as the validating
resolver mailhop asks (dns_servers), with trust anchors for the signed test
zones only (no root anchor, no other name server: nothing leaves loopback).

- dane.test is signed; its subdomains each have one MX host on 127.0.0.1
  with its own TLSA records (_PORT._tcp.HOST, PORT the sink's):
  DANE-EE (3 1 1 of the sink's key), DANE-TA (2 0 1 of the test CA, which
  the sink sends in its chain), a mismatch, unusable records (PKIX usages),
  and none at all.
- bogus.test is signed, but its TLSA record was changed after signing:
  unbound answers SERVFAIL for it (bogus), while the MX and A are secure.
- plain.test is not signed (insecure): its (mismatching) TLSA is ignored.

The SMTP side is one aiosmtpd sink with STARTTLS, its certificate made at
test time for every MX host name, sent with the CA in the chain.
"""
import hashlib
import shutil
import ssl
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port
from test_tls import (_make_ca, _make_leaf, _openssl, finish, queue_json,
                      submit, wait_until)

HOSTS = ["mx-ee", "mx-ta", "mx-bad", "mx-unusable", "mx-none"]
# MX hosts that are aliases (RFC 7672 §2.2.2): (case, target, where the
# TLSA record is: "target" or "alias").  The certificate names each alias
# but no target, so a DANE-TA check passes only on the MX host name.
ALIASES = [("cn-ee", "tgt-ee", "target"), ("cn-ta", "tgt-ta", "target"),
           ("cn-orig", "tgt-orig", "alias")]
# Not among the certificate's names: DANE-TA must refuse it.
OTHER_HOSTS = ["mx-taname"]


def _need(*tools):
    for t in tools:
        path = shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")
        assert path, f"{t} is missing (scripts/deps --test installs it)"


class Sink:
    """aiosmtpd with STARTTLS; collects (rcpts, over_tls)."""

    def __init__(self, chain=None, key=None):
        self.messages = []
        kw = {}
        if chain:  # else no STARTTLS at all
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(chain, key)
            kw["tls_context"] = ctx
        self.controller = Controller(self, hostname="127.0.0.1",
                                     port=free_port(), **kw)
        self.controller.start()
        self.port = self.controller.port

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos),
                              session.ssl is not None))
        return "250 2.0.0 OK"

    def got(self, rcpt):
        return [tls for rcpts, tls in self.messages if rcpt in rcpts]


def _der_cert(path):
    pem = open(path).read()
    return ssl.PEM_cert_to_DER_cert(
        pem.split("-----END CERTIFICATE-----")[0] +
        "-----END CERTIFICATE-----\n")


def _spki_sha256(d, cert):
    pub = _openssl("x509", "-in", cert, "-noout", "-pubkey", cwd=d).stdout
    (d / "pub.pem").write_text(pub)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "pub.pem",
                          "-outform", "DER"], cwd=d, capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest()


def _sign(d, zone, text):
    """Writes and signs zone (KSK + ZSK, ECDSA P-256); returns the path of
    the signed file and the KSK's DS text for the trust anchor."""
    (d / f"{zone}.zone").write_text(text)
    zsk = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", zone],
                         cwd=d, capture_output=True, text=True,
                         check=True).stdout.strip()
    ksk = subprocess.run(["ldns-keygen", "-k", "-a", "ECDSAP256SHA256",
                          zone], cwd=d, capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run(["ldns-signzone", f"{zone}.zone", zsk, ksk], cwd=d,
                   capture_output=True, text=True, check=True)
    return d / f"{zone}.zone.signed", (d / f"{ksk}.ds").read_text()


def _zone_head(zone):
    return (f"$ORIGIN {zone}.\n$TTL 60\n"
            f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
            f"@ IN NS ns.{zone}.\n"
            f"ns IN A 127.0.0.1\n")


class DnsSetup:
    """nsd (authoritative) and unbound (validating) on loopback."""

    def __init__(self, d, port, ee_hash, ta_hash, plain_port):
        self.d = d
        self.procs = []
        # dane.test: one subdomain per case.
        z = _zone_head("dane.test")
        for h in HOSTS + OTHER_HOSTS:
            case = h[3:]
            z += f"{case} IN MX 10 {h}.dane.test.\n{h} IN A 127.0.0.1\n"
        tl = f"_{port}._tcp"
        z += f"{tl}.mx-ee IN TLSA 3 1 1 {ee_hash}\n"
        z += f"{tl}.mx-ta IN TLSA 2 0 1 {ta_hash}\n"
        z += f"{tl}.mx-taname IN TLSA 2 0 1 {ta_hash}\n"
        # Two MX hosts: the first one's TLSA lookup fails (bogus.test).
        z += "multi IN MX 10 mx.bogus.test.\nmulti IN MX 20 mx-ee.dane.test.\n"
        z += f"{tl}.mx-bad IN TLSA 3 1 1 {'00' * 32}\n"
        # The same host on the port of a sink without STARTTLS.
        z += f"_{plain_port}._tcp.mx-ee IN TLSA 3 1 1 {ee_hash}\n"
        z += f"{tl}.mx-unusable IN TLSA 1 1 1 {ee_hash}\n"
        # MTA-STS beside DANE (test_dane_wins_over_mta_sts): policies
        # whose mx: lists neither host.
        for sub, host in (("sts-ee", "mx-ee"), ("sts-none", "mx-none")):
            z += (f"{sub} IN MX 10 {host}.dane.test.\n"
                  f"_mta-sts.{sub} IN TXT \"v=STSv1; id=d1\"\n"
                  f"mta-sts.{sub} IN A 127.0.0.1\n")
        z += f"{tl}.mx-unusable IN TLSA 0 0 1 {ta_hash}\n"
        for case, target, where in ALIASES:
            z += (f"{case} IN MX 10 mx-{case}.dane.test.\n"
                  f"mx-{case} IN CNAME {target}.dane.test.\n"
                  f"{target} IN A 127.0.0.1\n")
            usage = "2 0 1 " + ta_hash if case == "cn-ta" else \
                "3 1 1 " + ee_hash
            owner = target if where == "target" else f"mx-{case}"
            z += f"{tl}.{owner} IN TLSA {usage}\n"
        dane_signed, dane_ds = _sign(d, "dane.test", z)
        # bogus.test: the TLSA record no longer matches its signature.
        z = _zone_head("bogus.test")
        z += "b IN MX 10 mx.bogus.test.\nmx IN A 127.0.0.1\n"
        z += f"{tl}.mx IN TLSA 3 1 1 {ee_hash}\n"
        bogus_signed, bogus_ds = _sign(d, "bogus.test", z)
        text = bogus_signed.read_text()
        assert ee_hash.upper() in text.upper()
        flipped = "1" * 64 if ee_hash[:1] != "1" else "2" * 64
        lines = []
        for line in text.splitlines():
            if "TLSA" in line and "RRSIG" not in line:
                line = line[:line.upper().rfind(ee_hash.upper())] + flipped
            lines.append(line)
        bogus_signed.write_text("\n".join(lines) + "\n")
        # plain.test: unsigned.
        z = _zone_head("plain.test")
        z += "p IN MX 10 mx.plain.test.\nmx IN A 127.0.0.1\n"
        z += f"{tl}.mx IN TLSA 3 1 1 {'00' * 32}\n"
        (d / "plain.test.zone").write_text(z)

        self.nsd_port = free_port(udp=True)
        zones = [("dane.test", dane_signed), ("bogus.test", bogus_signed),
                 ("plain.test", d / "plain.test.zone")]
        conf = ("server:\n"
                f"  ip-address: 127.0.0.1@{self.nsd_port}\n"
                "  username: \"\"\n  chroot: \"\"\n"
                f"  zonesdir: \"{d}\"\n"
                "  database: \"\"\n"
                f"  zonelistfile: \"{d}/zone.list\"\n"
                f"  xfrdfile: \"{d}/xfrd.state\"\n"
                f"  pidfile: \"{d}/nsd.pid\"\n"
                f"  logfile: \"{d}/nsd.log\"\n"
                "  server-count: 1\n  verbosity: 1\n"
                "remote-control:\n  control-enable: no\n")
        for name, path in zones:
            conf += f"zone:\n  name: {name}\n  zonefile: \"{path}\"\n"
        (d / "nsd.conf").write_text(conf)
        r = subprocess.run(["nsd-checkconf", str(d / "nsd.conf")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self._spawn(["nsd", "-d", "-c", str(d / "nsd.conf")], "nsd")

        (d / "anchors").write_text(dane_ds + bogus_ds)
        self.port = free_port(udp=True)
        conf = ("server:\n"
                f"  interface: 127.0.0.1@{self.port}\n"
                f"  port: {self.port}\n"
                "  do-ip6: no\n"
                "  access-control: 127.0.0.0/8 allow\n"
                "  do-not-query-localhost: no\n"
                "  username: \"\"\n  chroot: \"\"\n"
                f"  directory: \"{d}\"\n"
                f"  pidfile: \"{d}/unbound.pid\"\n"
                "  use-syslog: no\n"
                f"  logfile: \"{d}/unbound.log\"\n"
                "  verbosity: 1\n  val-log-level: 2\n"
                "  num-threads: 1\n"
                "  qname-minimisation: no\n"
                # RFC 6761 names are answered locally by default.
                "  local-zone: \"test.\" nodefault\n"
                "  module-config: \"validator iterator\"\n"
                f"  trust-anchor-file: \"{d}/anchors\"\n"
                "  do-daemonize: no\n")
        for name, _ in zones:
            conf += (f"stub-zone:\n  name: \"{name}\"\n"
                     f"  stub-addr: 127.0.0.1@{self.nsd_port}\n")
        conf += "remote-control:\n  control-enable: no\n"
        (d / "unbound.conf").write_text(conf)
        r = subprocess.run(["unbound-checkconf", str(d / "unbound.conf")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        self._spawn(["unbound", "-d", "-c", str(d / "unbound.conf")],
                    "unbound")
        self.address = f"127.0.0.1:{self.port}"
        self._wait_answers()

    def _spawn(self, argv, name):
        log = open(self.d / f"{name}.out", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=log, cwd=self.d)
        self.procs.append(p)

    def _wait_answers(self):
        """Until unbound answers a query for the signed zone with AD (both
        servers up, the anchors loaded)."""
        deadline = time.time() + 20
        last = ""
        while time.time() < deadline:
            for p in self.procs:
                assert p.poll() is None, (p.args, self.logs())
            r = subprocess.run(["ldns-dig" if shutil.which("ldns-dig")
                                else "drill", "-p", str(self.port), "@127.0.0.1",
                                "-D", "ee.dane.test", "MX"],
                               capture_output=True, text=True)
            last = r.stdout + r.stderr
            if " ad" in last and "mx-ee" in last:
                return
            time.sleep(0.1)
        raise AssertionError(f"resolver not ready: {last}\n{self.logs()}")

    def logs(self):
        out = ""
        for f in ("nsd.out", "nsd.log", "unbound.out", "unbound.log"):
            p = self.d / f
            if p.exists():
                out += f"--- {f}\n{p.read_text(errors='replace')[-3000:]}"
        return out

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _need("nsd", "unbound", "ldns-signzone", "ldns-keygen", "drill")
    d = tmp_path_factory.mktemp("dane")
    _make_ca(d, "ca")
    sans = ",".join(f"DNS:{h}.dane.test" for h in HOSTS)
    sans += "".join(f",DNS:mx-{c}.dane.test" for c, _, _ in ALIASES)
    sans += ",DNS:mx.bogus.test,DNS:mx.plain.test"
    _make_leaf(d, "server", "ca", sans)
    (d / "chain.pem").write_text((d / "server.crt").read_text() +
                                 (d / "ca.crt").read_text())
    sink = Sink(str(d / "chain.pem"), str(d / "server.key"))
    plain = Sink()
    ee_hash = _spki_sha256(d, "server.crt")
    ta_hash = hashlib.sha256(_der_cert(d / "ca.crt")).hexdigest()
    dns = None
    try:
        dns = DnsSetup(d, sink.port, ee_hash, ta_hash, plain.port)
        dns.plain_sink = plain
        yield sink, dns
    finally:
        if dns:
            dns.stop()
        sink.controller.stop()
        plain.controller.stop()


def conf(world, policy="dane"):
    sink, dns = world
    return {"smtp_port": sink.port, "dns_servers": dns.address,
            "outbound_tls": policy, "retry_schedule": "1h"}


def line_for(m, event, rcpt):
    for line in m.log().splitlines():
        if f"event={event}" in line and f"rcpt=<{rcpt}>" in line:
            return line
    return None


def wait_line(m, event, rcpt):
    return wait_until(lambda: line_for(m, event, rcpt), timeout=30)


def delivered(world, mailhop, rcpt, policy="dane"):
    sink, _ = world
    m = mailhop(**conf(world, policy))
    submit(m, rcpt)
    line = wait_line(m, "delivered", rcpt)
    assert sink.got(rcpt) == [True], "not delivered over TLS"
    finish(m)
    print(line)  # shown with -s
    return line


def deferred(world, mailhop, rcpt, policy="dane"):
    sink, _ = world
    m = mailhop(**conf(world, policy))
    submit(m, rcpt)
    line = wait_line(m, "deferred", rcpt)
    assert sink.got(rcpt) == [], "delivered although it must not be"
    msgs = queue_json(m)
    assert msgs[0]["recipients"][0]["state"] == "deferred"
    finish(m)
    print(line)  # shown with -s
    return line


def test_dane_ee_delivers_with_tls_policy_dane(world, mailhop):
    line = delivered(world, mailhop, "bob@ee.dane.test")
    assert "tls_policy=dane" in line, line
    assert "tls=TLSv1." in line, line


def test_dane_ta_chain_and_mx_name(world, mailhop):
    line = delivered(world, mailhop, "bob@ta.dane.test")
    assert "tls_policy=dane" in line, line


def test_dane_ta_checks_the_mx_host_name(world, mailhop):
    # The chain ends at the TLSA's CA, but the certificate does not name
    # mx-taname.dane.test: a mismatch (RFC 7672 §3.2.3).
    line = deferred(world, mailhop, "bob@taname.dane.test")
    assert "dsn=4.7.5" in line and "DANE" in line, line


def test_mx_alias_tlsa_at_the_expanded_name(world, mailhop):
    """RFC 7672 §2.2.2: an MX host that is a secure CNAME has its TLSA
    records looked up at the name the CNAME leads to first."""
    line = delivered(world, mailhop, "bob@cn-ee.dane.test")
    assert "tls_policy=dane" in line, line


def test_mx_alias_dane_ta_accepts_the_mx_host_name(world, mailhop):
    # TLSA 2 0 1 at tgt-ta; the certificate names only mx-cn-ta (the MX
    # host name), which is a reference identifier beside the base domain.
    line = delivered(world, mailhop, "bob@cn-ta.dane.test")
    assert "tls_policy=dane" in line, line


def test_mx_alias_without_tlsa_at_the_target_asks_the_alias(world,
                                                            mailhop):
    # No TLSA at tgt-orig: the records at the MX host name itself apply.
    line = delivered(world, mailhop, "bob@cn-orig.dane.test", "dane-only")
    assert "tls_policy=dane" in line, line


def test_failed_tlsa_lookup_skips_to_the_next_mx(world, mailhop):
    line = delivered(world, mailhop, "bob@multi.dane.test")
    assert "tls_policy=dane" in line and "mx-ee.dane.test" in line, line


def test_tlsa_mismatch_defers_4_7_5(world, mailhop):
    line = deferred(world, mailhop, "bob@bad.dane.test")
    assert "dsn=4.7.5" in line, line
    assert "DANE" in line and "mx-bad.dane.test" in line, line


def test_starttls_stripped_defers(world, mailhop):
    # A DANE host whose EHLO offers no STARTTLS (as after a downgrade
    # attack): never plaintext.
    _, dns = world
    plain = dns.plain_sink
    m = mailhop(**dict(conf(world), smtp_port=plain.port))
    submit(m, "frank@ee.dane.test")
    line = wait_line(m, "deferred", "frank@ee.dane.test")
    assert plain.got("frank@ee.dane.test") == []
    assert "dsn=4.7.5" in line and "DANE" in line, line
    finish(m)


def test_unusable_tlsa_is_opportunistic(world, mailhop):
    line = delivered(world, mailhop, "bob@unusable.dane.test")
    assert "tls_policy=none" in line, line


def test_secure_without_tlsa_is_opportunistic(world, mailhop):
    line = delivered(world, mailhop, "bob@none.dane.test")
    assert "tls_policy=none" in line, line


def test_bogus_tlsa_servfail_defers_the_host(world, mailhop):
    line = deferred(world, mailhop, "bob@b.bogus.test")
    assert "dsn=4.7.5" in line, line
    assert "TLSA lookup" in line and "SERVFAIL" in line, line


def test_unsigned_zone_is_opportunistic(world, mailhop):
    # Its TLSA record would not match: being insecure, it is not used.
    line = delivered(world, mailhop, "bob@p.plain.test")
    assert "tls_policy=none" in line, line


def test_dane_only_defers_unsigned_and_delivers_dane(world, mailhop):
    line = deferred(world, mailhop, "carol@p.plain.test", "dane-only")
    assert "dsn=4.7.5" in line and "not DNSSEC-secure" in line, line
    line = delivered(world, mailhop, "carol@ee.dane.test", "dane-only")
    assert "tls_policy=dane" in line, line


def test_dane_only_defers_without_tlsa(world, mailhop):
    line = deferred(world, mailhop, "dave@none.dane.test", "dane-only")
    assert "no usable" in line, line


def test_opportunistic_ignores_tlsa(world, mailhop):
    # outbound_tls = opportunistic: the mismatching TLSA plays no part.
    line = delivered(world, mailhop, "erin@bad.dane.test", "opportunistic")
    assert "tls_policy=none" in line, line


def test_warning_for_resolver_off_loopback(mailhop, tmp_path):
    m = mailhop(start=False, dns_servers="192.0.2.53", outbound_tls="dane")
    m.start()
    m.wait_log("not on loopback")
    finish(m)


def test_dane_wins_over_mta_sts(world, mailhop):
    """Both apply (CONTRACT §4b): an enforced MTA-STS policy that lists
    none of the MX hosts.  The host with usable TLSA records is DANE's:
    delivered, tls_policy=dane.  The secure host without TLSA is
    MTA-STS's: outside the policy, deferred 4.7.5."""
    from stsfix import PolicyServer, policy
    sink, dns = world
    d = dns.d
    _make_leaf(d, "web", "ca", "DNS:mta-sts.sts-ee.dane.test,"
               "DNS:mta-sts.sts-none.dane.test")

    class WebPKI:
        def server_ctx(self, name):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
            return ctx

    web = PolicyServer(WebPKI())
    try:
        for dom in ("sts-ee.dane.test", "sts-none.dane.test"):
            web.policies[dom] = policy("enforce", "mx.elsewhere.test")
        m = mailhop(**conf(world), https_port=web.port,
                    tls_ca_file=str(d / "ca.crt"))
        submit(m, "bob@sts-ee.dane.test")
        line = wait_line(m, "delivered", "bob@sts-ee.dane.test")
        assert "tls_policy=dane" in line, line
        submit(m, "bob@sts-none.dane.test")
        line = wait_line(m, "deferred", "bob@sts-none.dane.test")
        assert "dsn=4.7.5" in line and "MTA-STS" in line, line
        assert sink.got("bob@sts-none.dane.test") == []
        assert web.hit("sts-ee.dane.test") == 1
        assert web.hit("sts-none.dane.test") == 1
        finish(m)
    finally:
        web.stop()

"""DKIM signing (CONTRACT §1 `mailhop dkim keygen`, §2 `dkim_sign`, §3a).

Keys come from `mailhop dkim keygen`; its printed TXT record is what the
verifiers see, so the record itself is tested.  Messages go through the
real relay to a sink on loopback and are verified by two implementations
that are not ours:

  - dkimpy (Debian's python3-dkim: rsa-sha256 and ed25519-sha256), with the
    record passed through its dnsfunc;
  - OpenDKIM's opendkim-testmsg (libopendkim), which asks DNS through the
    system resolver: it runs in its own network and mount namespace
    (unshare) where /etc/resolv.conf names 127.0.0.1 and tests/integration/
    dnsserver.py serves the record on port 53 of that namespace's loopback.
    Skipped (with the reason) when unshare is not allowed.
"""
import json
import re
import shutil
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run
from smtpsink import Sink

dkim = pytest.importorskip("dkim")

HERE = Path(__file__).resolve().parent
DOMAIN = "sign.example"


def keygen(tmp_path, selector, *args, domain=DOMAIN):
    out = tmp_path / f"{domain}.{selector}.key"
    r = run("dkim", "keygen", domain, selector, "--out", str(out), *args,
            timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(
        rf'{re.escape(selector)}\._domainkey\.{re.escape(domain)}\. IN TXT'
        r'((?: "[^"]*")+)\n', r.stdout)
    assert m, r.stdout
    strings = re.findall(r'"([^"]*)"', m.group(1))
    assert all(len(s) <= 255 for s in strings)
    return out, strings


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    rsa, rsa_txt = keygen(d, "rsa1")
    ed, ed_txt = keygen(d, "ed1", "--type", "ed25519")
    return {
        "rsa": (rsa, rsa_txt, "rsa1"),
        "ed": (ed, ed_txt, "ed1"),
        "records": {
            f"rsa1._domainkey.{DOMAIN}": "".join(rsa_txt),
            f"ed1._domainkey.{DOMAIN}": "".join(ed_txt),
        },
        "strings": {
            f"rsa1._domainkey.{DOMAIN}": rsa_txt,
            f"ed1._domainkey.{DOMAIN}": ed_txt,
        },
    }


def dkimpy_verify(data, records):
    """Verifies every DKIM-Signature of data with dkimpy; returns the list
    of (d, s, a, ok)."""

    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        return records.get(n.rstrip(".").lower(), "").encode()

    d = dkim.DKIM(data)
    sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    out = []
    for i, raw in enumerate(sigs):
        tags = dict(
            t.strip().split("=", 1)
            for t in re.sub(r"\s+", "", raw.decode()).split(";") if "=" in t)
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
        out.append((tags["d"], tags["s"], tags["a"], ok))
    return out


NS_HELPER = r'''
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from dnsserver import DNSServer
import json
records = json.load(open(sys.argv[2]))
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
srv = DNSServer(records, port=53).start()
try:
    r = subprocess.run(["opendkim-testmsg"], stdin=open(sys.argv[3], "rb"),
                       capture_output=True, timeout=60)
    sys.stdout.write("rc=%d\n" % r.returncode)
    sys.stdout.write(r.stdout.decode(errors="replace"))
    sys.stdout.write(r.stderr.decode(errors="replace"))
finally:
    srv.stop()
'''


def opendkim_verify(tmp_path, data, strings):
    """opendkim-testmsg on data, DNS from a loopback server in a private
    namespace.  Returns (ok, output) or skips when that is impossible."""
    if not shutil.which("opendkim-testmsg"):
        pytest.skip("opendkim-testmsg not installed (opendkim-tools)")
    if not shutil.which("unshare"):
        pytest.skip("unshare not available")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    rec = tmp_path / "records.json"
    rec.write_text(json.dumps(
        {name: [["TXT", s, 60]] for name, s in strings.items()}))
    msg = tmp_path / "msg.eml"
    msg.write_bytes(data)
    helper = tmp_path / "nshelper.py"
    helper.write_text(NS_HELPER)
    script = (f"mount --bind {resolv} /etc/resolv.conf && "
              f"exec {sys.executable} {helper} {HERE} {rec} {msg}")
    r = subprocess.run(["unshare", "-mn", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "rc=" not in r.stdout:
        pytest.skip(f"cannot run in a private namespace: {r.stderr.strip()}")
    return "rc=0" in r.stdout and "error" not in r.stdout.lower(), \
        r.stdout + r.stderr


@pytest.fixture
def relay(mailhop, keys):
    """A mailhop relaying to a sink; returns (mailhop, sink)."""
    sinks, relays = [], []

    def make(dkim_sign, **kw):
        sink = Sink()
        sinks.append(sink)
        m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                    dkim_sign=dkim_sign, **kw)
        relays.append(m)
        return m, sink

    yield make
    # A clean exit (and no sanitizer report under ASan) after signing.
    for m in relays:
        assert m.stop() == 0, m.log()
        assert "Sanitizer" not in m.log()
    for s in sinks:
        s.stop()


def rsa_entry(keys):
    return f"{DOMAIN}:rsa1:{keys['rsa'][0]}"


def ed_entry(keys):
    return f"{DOMAIN}:ed1:{keys['ed'][0]}"


def send(m, data, sender="a@sign.example", rcpts=("x@dest.example",)):
    with smtplib.SMTP("127.0.0.1", m.port, timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail(sender, list(rcpts), data)


def relayed(m, sink, data, n=1, **kw):
    send(m, data, **kw)
    return sink.wait(n)[n - 1].data


def both_verify(tmp_path, keys, out, expect):
    """dkimpy verifies each expected (selector, algorithm); opendkim
    verifies the message."""
    res = dkimpy_verify(out, keys["records"])
    got = sorted((s, a) for (_, s, a, _) in res)
    assert got == sorted(expect), res
    assert all(ok for (*_, ok) in res), res
    ok, text = opendkim_verify(tmp_path, out, keys["strings"])
    assert ok, text


MSG = (b"From: Alice <alice@Sign.Example>\r\n"
       b"To: Bob <bob@dest.example>\r\n"
       b"Subject: DKIM test\r\n"
       b"Message-ID: <1@sign.example>\r\n"
       b"Date: Mon, 2 Jan 2026 15:04:05 +0000\r\n"
       b"\r\n"
       b"Hello,\r\n.a line starting with a dot\r\n\r\n\r\n")


def test_keygen_file_mode_and_no_overwrite(tmp_path):
    out = tmp_path / "k.key"
    r = run("dkim", "keygen", "Example.test", "s1", "--out", str(out),
            "--type", "ed25519")
    assert r.returncode == 0, r.stderr
    assert (out.stat().st_mode & 0o777) == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert re.fullmatch(r's1\._domainkey\.Example\.test\. IN TXT '
                        r'"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="\n',
                        r.stdout), r.stdout
    before = out.read_bytes()
    r = run("dkim", "keygen", "example.test", "s1", "--out", str(out))
    assert r.returncode == 1
    assert "not overwritten" in r.stderr
    assert out.read_bytes() == before
    # default file name in the current directory
    r = run("dkim", "keygen", "example.test", "s2", "--type", "ed25519",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "example.test.s2.key").exists()
    # usage errors
    assert run("dkim", "keygen", "example.test").returncode == 1
    assert run("dkim", "keygen", "example.test", "s3", "--type", "dsa",
               cwd=tmp_path).returncode == 1
    assert run("dkim", "keygen", "example.test", "s3", "--bits", "512",
               cwd=tmp_path).returncode == 1


def test_keygen_rsa_4096_record_split(tmp_path):
    out = tmp_path / "big.key"
    r = run("dkim", "keygen", DOMAIN, "big", "--bits", "4096", "--out",
            str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    # The line is zone-file syntax (dnslib's zone parser reads it back).
    from dnslib import QTYPE, RR
    (rr,) = RR.fromZone(r.stdout)
    assert str(rr.rname) == f"big._domainkey.{DOMAIN}."
    assert rr.rtype == QTYPE.TXT
    strings = [bytes(x) for x in rr.rdata.data]
    assert len(strings) >= 3 and all(len(x) <= 255 for x in strings)
    assert b"".join(strings).startswith(b"v=DKIM1; k=rsa; p=MII")


def test_signed_rsa_and_ed25519_dual(relay, keys, tmp_path):
    m, sink = relay(f"{rsa_entry(keys)}, {ed_entry(keys)}")
    out = relayed(m, sink, MSG)
    assert out.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; "
                          b"c=relaxed/relaxed; d=sign.example;")
    assert m.wait_log("dkim=sign.example")
    both_verify(tmp_path, keys, out,
                [("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")])
    # the header set: From oversigned, present fields signed
    sig = out.split(b"\r\n\r\n")[0].decode()
    h = re.search(r"h=([^;]*);", re.sub(r"\s+", "", sig)).group(1)
    assert h.split(":")[:2] == ["from", "from"]
    for name in ("to", "subject", "message-id", "date"):
        assert name in h.split(":")


def test_second_from_added_downstream_fails(relay, keys, tmp_path):
    m, sink = relay(ed_entry(keys))
    out = relayed(m, sink, MSG)
    assert all(ok for (*_, ok) in dkimpy_verify(out, keys["records"]))
    head, body = out.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: mallory@evil.example\r\n\r\n" + body
    res = dkimpy_verify(forged, keys["records"])
    assert res and not any(ok for (*_, ok) in res), res


def test_edge_cases_verify(relay, keys, tmp_path):
    """Folded and repeated headers, odd case, empty body, no final CRLF,
    8-bit and SMTPUTF8, lines over 998 octets (folded on the way out)."""
    m, sink = relay(f"{rsa_entry(keys)}, {ed_entry(keys)}")
    long_line = b"".join(b"%d " % i for i in range(600))  # > 998, spaces
    no_ws = b"x" * 2500  # > 998, no whitespace at all
    cases = {
        "folded": (b"fRoM: \"Doe, Al\"\r\n <al@sign.example>\r\n"
                   b"SUBJECT: a\r\n\tfolded   subject  \r\n"
                   b"To: one@dest.example,\r\n two@dest.example\r\n"
                   b"\r\nbody\r\n"),
        "empty_body": b"From: al@sign.example\r\nSubject: e\r\n\r\n",
        "no_final_crlf": (b"From: al@sign.example\r\nSubject: n\r\n\r\n"
                          b"last line without CRLF"),
        "eight_bit": ("From: Zoë <al@sign.example>\r\nSubject: café\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                      "naïve body\r\n").encode(),
        "long_lines": (b"From: al@sign.example\r\nSubject: " + long_line +
                       b"\r\nX-Long: " + no_ws + b"\r\n\r\n" + long_line +
                       b"\r\n" + no_ws + b"\r\n.dot\r\n"),
        # every signed name: h= is long enough to be folded
        "all_headers": (b"From: al@sign.example\r\nTo: t@dest.example\r\n"
                        b"Cc: c@dest.example\r\nSubject: all\r\n"
                        b"Date: Mon, 2 Jan 2026 15:04:05 +0000\r\n"
                        b"Message-ID: <all@sign.example>\r\n"
                        b"Reply-To: r@sign.example\r\n"
                        b"In-Reply-To: <p@sign.example>\r\n"
                        b"References: <o@sign.example> <p@sign.example>\r\n"
                        b"MIME-Version: 1.0\r\n"
                        b"Content-Type: text/plain; charset=us-ascii\r\n"
                        b"Content-Transfer-Encoding: 7bit\r\n"
                        b"Sender: s@sign.example\r\n\r\nbody\r\n"),
        "trailing_ws": (b"From: al@sign.example\r\nSubject: t \r\n\r\n"
                        b"a  \t b \r\n\r\n  \r\n"),
    }
    n = 0
    for name, data in cases.items():
        n += 1
        if name == "eight_bit":
            with smtplib.SMTP("127.0.0.1", m.port, timeout=30) as s:
                s.ehlo("client.test")
                s.sendmail("al@sign.example", ["x@dest.example"], data,
                           mail_options=["BODY=8BITMIME", "SMTPUTF8"])
            out = sink.wait(n)[n - 1].data
        else:
            out = relayed(m, sink, data, n=n)
        assert out.count(b"DKIM-Signature:") == 2, name
        if name == "all_headers":
            assert re.search(rb"h=[^;]*\r\n\t[^;]*;", out), out[:900]
        for line in out.split(b"\r\n"):
            assert len(line) <= 998, name
        sub = tmp_path / name
        sub.mkdir()
        both_verify(sub, keys, out,
                    [("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")])


def test_repeated_header_dkimpy(relay, keys, tmp_path):
    """A field repeated (two To:, against RFC 5322 §3.6) is signed once per
    occurrence, bottom-up.  Only dkimpy: opendkim-testmsg checks RFC 5322's
    field counts strictly and refuses such a message ("Syntax error")
    before it looks at signatures."""
    m, sink = relay(f"{rsa_entry(keys)}, {ed_entry(keys)}")
    data = (b"From: al@sign.example\r\nTo: one@dest.example\r\n"
            b"Subject: r\r\nto: two@dest.example\r\n\r\nbody\r\n")
    out = relayed(m, sink, data)
    res = dkimpy_verify(out, keys["records"])
    assert len(res) == 2 and all(ok for (*_, ok) in res), res
    assert b"h=from:from:to:to:subject" in out.replace(b"\r\n\t", b"")
    # dropping either To: breaks both signatures
    for victim in (b"To: one@dest.example\r\n", b"to: two@dest.example\r\n"):
        res = dkimpy_verify(out.replace(victim, b""), keys["records"])
        assert not any(ok for (*_, ok) in res), res


def test_message_without_headers(relay, keys, tmp_path):
    """No From: at all: relayed unsigned."""
    m, sink = relay(ed_entry(keys))
    out = relayed(m, sink, b"just a body line\r\nand another\r\n")
    assert b"DKIM-Signature" not in out
    assert b"just a body line" in out
    log = m.log()
    assert "event=accepted" in log and "dkim=" not in log
    # a header section verifiers refuse: relayed unsigned, with a warning
    out = relayed(m, sink, b"From: al@sign.example\r\nnot a field\r\n"
                  b"\r\nbody\r\n", n=2)
    assert b"DKIM-Signature" not in out
    m.wait_log("malformed header section")


def test_other_domain_unsigned_and_one_mb(relay, keys, tmp_path):
    m, sink = relay(rsa_entry(keys))
    other = MSG.replace(b"alice@Sign.Example", b"alice@other.example")
    out = relayed(m, sink, other)
    assert b"DKIM-Signature" not in out
    # 1 MB body in long lines: signed, verified by both
    line = b"0123456789abcdef" * 60 + b"\r\n"
    big = MSG.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + line * (1048576 // len(line) + 1)
    out = relayed(m, sink, big, n=2)
    assert len(out) > 1048576
    both_verify(tmp_path, keys, out, [("rsa1", "rsa-sha256")])


def test_every_attempt_sends_identical_bytes(mailhop, keys, tmp_path):
    """The signature is stored: a deferred message is retried with the same
    bytes."""
    seen = []

    def reply(msg):
        seen.append(msg.data)
        return "451 4.3.0 try again" if len(seen) == 1 else "250 2.0.0 Ok"

    sink = Sink(data_reply=reply)
    try:
        m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                    dkim_sign=ed_entry(keys), retry_schedule="1s")
        send(m, MSG)
        sink.wait(1, timeout=60)
        assert len(seen) == 2
        assert seen[0] == seen[1]
        assert b"DKIM-Signature" in seen[0]
    finally:
        sink.stop()


def test_bad_keys_are_startup_errors(mailhop, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    m = mailhop(start=False, dkim_sign=f"{DOMAIN}:s:{bad}")
    path = m.write_conf()
    r = run("serve", "-c", str(path), timeout=30)
    assert r.returncode == 1
    assert "dkim_sign" in r.stderr and str(bad) in r.stderr
    m.conf["dkim_sign"] = f"{DOMAIN}:s:{tmp_path}/missing.key"
    r = run("serve", "-c", str(m.write_conf()), timeout=30)
    assert r.returncode == 1 and "missing.key" in r.stderr
    # `check` reads the keys too
    r = run("check", "-c", str(m.write_conf()), timeout=30)
    assert r.returncode == 1 and "missing.key" in r.stderr
    # RSA under 1024 bits: an error; 1024: a warning
    small = tmp_path / "small.key"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(small),
                    "768"], check=True, capture_output=True)
    m.conf["dkim_sign"] = f"{DOMAIN}:s:{small}"
    r = run("serve", "-c", str(m.write_conf()), timeout=30)
    assert r.returncode == 1 and "768 bits" in r.stderr


def test_traditional_rsa_1024_warns_and_signs(relay, keys, tmp_path):
    k = tmp_path / "trad.key"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(k),
                    "1024"], check=True, capture_output=True)
    assert k.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    pub = subprocess.run(["openssl", "rsa", "-in", str(k), "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    import base64
    p = base64.b64encode(pub).decode()
    m, sink = relay(f"{DOMAIN}:trad:{k}")
    assert "1024 bits" in m.log()
    out = relayed(m, sink, MSG)
    records = {f"trad._domainkey.{DOMAIN}": f"v=DKIM1; k=rsa; p={p}"}
    res = dkimpy_verify(out, records)
    assert res and all(ok for (*_, ok) in res), res


def test_sighup_rereads_keys(relay, keys, tmp_path):
    """SIGHUP reads the key files again; a bad file keeps the old key."""
    import signal
    live = tmp_path / "live.key"
    live.write_bytes(keys["ed"][0].read_bytes())
    m, sink = relay(f"{DOMAIN}:ed1:{live}")
    out = relayed(m, sink, MSG)
    assert all(ok for (*_, ok) in dkimpy_verify(out, keys["records"]))
    # a broken file: the old key stays in use
    live.write_text("garbage\n")
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("keeping the old DKIM keys")
    out = relayed(m, sink, MSG, n=2)
    assert all(ok for (*_, ok) in dkimpy_verify(out, keys["records"]))
    # a new key under the same selector: signatures follow it
    live.unlink()
    _, txt = keygen(tmp_path, "ed1", "--type", "ed25519", domain=DOMAIN)
    (tmp_path / f"{DOMAIN}.ed1.key").rename(live)
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("DKIM keys reloaded")
    out = relayed(m, sink, MSG, n=3)
    new = {f"ed1._domainkey.{DOMAIN}": "".join(txt)}
    assert all(ok for (*_, ok) in dkimpy_verify(out, new))
    assert not any(ok for (*_, ok) in dkimpy_verify(out, keys["records"]))


def test_bounce_signed_with_hostname_domain_key(mailhop, keys, tmp_path):
    """A bounce (From: MAILER-DAEMON@hostname) is signed by the key of
    hostname's domain (here a parent domain: d=sign.example)."""
    sink = Sink(rcpt_reply=lambda addr, n: "550 5.1.1 no such user"
                if addr.startswith("bad@") else "250 2.1.5 Ok")
    try:
        m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                    hostname="mx1.sign.example",
                    dkim_sign=f"{rsa_entry(keys)}, {ed_entry(keys)}")
        send(m, MSG.replace(b"To: Bob <bob@dest.example>",
                            b"To: bad@dest.example"),
             sender="someone@sender.example", rcpts=("bad@dest.example",))
        bounce = sink.wait(1, timeout=60)[0]
        assert bounce.sender == ""
        out = bounce.data
        assert re.search(rb"^From: .*MAILER-DAEMON@mx1.sign.example", out, re.M), out[:1500]
        both_verify(tmp_path, keys, out,
                    [("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")])
        assert m.stop() == 0 and "Sanitizer" not in m.log()
    finally:
        sink.stop()


def test_bounce_copy_signed_too(mailhop, keys, tmp_path):
    """bounce_notice_recipient (issue 19): the operator's copy is signed
    like the bounce, one signing after the other."""
    sink = Sink(rcpt_reply=lambda addr, n: "550 5.1.1 no such user"
                if addr.startswith("bad@") else "250 2.1.5 Ok")
    try:
        m = mailhop(relayhost=f"[127.0.0.1]:{sink.port}", relayhost_tls="none",
                    hostname="mx1.sign.example",
                    bounce_notice_recipient="postmaster@ops.example",
                    dkim_sign=f"{rsa_entry(keys)}, {ed_entry(keys)}")
        send(m, MSG.replace(b"To: Bob <bob@dest.example>",
                            b"To: bad@dest.example"),
             sender="someone@sender.example", rcpts=("bad@dest.example",))
        got = sink.wait(2, timeout=60)
        (copy,) = [g for g in got if g.addresses == ["postmaster@ops.example"]]
        (bounce,) = [g for g in got if g.addresses == ["someone@sender.example"]]
        for out in (copy.data, bounce.data):
            both_verify(tmp_path, keys, out,
                        [("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")])
        assert b"Subject: Postmaster Copy: " in copy.data
        assert m.stop() == 0 and "Sanitizer" not in m.log()
    finally:
        sink.stop()


def test_disk_full_with_signing_answers_452(mailhop, keys, tmp_path):
    """With dkim_sign set, a spool that could not take the data still gets
    452 4.3.1 (the signer passes the spool's error on)."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                        str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        # queue_minfree = 0: the reserve would refuse at MAIL; this is about
        # the spool failing under the signer
        m = mailhop(queue_path=str(d / "q.db"), dkim_sign=ed_entry(keys),
                    queue_minfree="0")
        s = smtplib.SMTP("127.0.0.1", m.port, timeout=30)
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@sign.example", ["y@b.test"],
                       "From: a@sign.example\r\nSubject: big\r\n\r\n" +
                       ("z" * 998 + "\r\n") * 4000)
        assert e.value.smtp_code == 452, e.value
        assert b"4.3.1" in e.value.smtp_error
        s.quit()
        assert m.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(d)])

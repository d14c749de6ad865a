"""Message sizes around the 64 KiB spool boundary over real TCP (issue 12
item 1): every size between 60,000 and 300,000 bytes is accepted, however
the client's writes fall into the server's reads — the whole DATA in one
sendall, or in odd-sized chunks — in plaintext and after STARTTLS.

Before the fix, a message whose last chunk filled the in-memory spool while
the end of data sat in the same read was refused with `451 4.3.0 queue write
failed` (sizes in windows just above each 64 KiB multiple, every time).
"""
import socket
import ssl
import subprocess

import pytest

from conftest import Raw, rows

# Around each 64 KiB multiple (where the spool goes to disk), the sizes the
# field reports named, and the ends of the range.  Bounded: ~30 messages per
# mode.
SIZES = sorted({
    60000, 65000, 65536, 65700, 66000, 68000, 70000, 70546, 75000, 80000,
    82000, 90000, 131072, 131500, 140000, 148000, 150000, 155000, 160000,
    196608, 197000, 210000, 232000, 238000, 244000, 262144, 262500, 280000,
    300000,
})


def message(size, tag):
    """An RFC 5322 message of exactly `size` bytes (CRLF lines of 78
    octets, a few starting with a dot)."""
    head = (f"From: a@a.example\r\nTo: b@b.example\r\n"
            f"Subject: size {size} {tag}\r\n\r\n").encode()
    body = bytearray()
    i = 0
    while len(head) + len(body) < size:
        line = (f"{i:06d} " + "x" * 70 + "\r\n").encode()
        if i % 97 == 5:
            line = b"." + line[1:]
        body += line
        i += 1
    msg = head + bytes(body)
    msg = msg[:size]
    if not msg.endswith(b"\r\n"):
        msg = msg[:-2] + b"\r\n"
    assert len(msg) == size
    return msg


def stuffed(msg):
    out = msg.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    return out


def send_data(sock_send, msg, chunk):
    data = stuffed(msg) + b".\r\n"
    if chunk is None:
        sock_send(data)
        return
    for i in range(0, len(data), chunk):
        sock_send(data[i:i + chunk])


def transaction(r, msg, chunk):
    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    send_data(r.send, msg, chunk)
    return r.reply()


def stored_bodies(m):
    return {bytes(b)[-200:] for (b,) in rows(m, "select body from messages")}


@pytest.mark.parametrize("chunk", [None, 1021, 4093, 65537],
                         ids=["sendall", "c1021", "c4093", "c65537"])
def test_sizes_plain(mailhop, chunk):
    m = mailhop(max_message_size="1m")
    failed = []
    sent = []
    for size in SIZES:
        r = Raw(m.port)
        assert r.reply()[0] == 220
        assert r.cmd("EHLO client.example")[0] == 250
        msg = message(size, f"plain-{chunk}")
        code, text = transaction(r, msg, chunk)
        if code != 250:
            failed.append((size, code, text))
        sent.append(msg)
        assert r.cmd("QUIT")[0] == 221
        r.close()
    assert not failed, failed
    assert "queue write failed" not in m.log()
    # Every message is stored byte-exact (the body follows the prefix).
    got = [bytes(b) for (b,) in rows(m, "select body from messages")]
    assert len(got) == len(SIZES)
    for msg in sent:
        assert any(g.endswith(msg) for g in got), len(msg)


def test_sizes_pipelined_one_buffer(mailhop):
    """The whole conversation in one write (what a pipelining MTA does
    after the 354): envelope, DATA, message and QUIT."""
    m = mailhop(max_message_size="1m")
    for size in (65700, 70546, 150000, 238000):
        s = socket.create_connection(("127.0.0.1", m.port), timeout=30)
        r = Raw.__new__(Raw)
        r.sock, r.buf = s, b""
        assert r.reply()[0] == 220
        msg = message(size, "onebuf")
        s.sendall(b"EHLO c.example\r\nMAIL FROM:<a@a.example>\r\n"
                  b"RCPT TO:<b@b.example>\r\nDATA\r\n" + stuffed(msg) +
                  b".\r\nQUIT\r\n")
        codes = [r.reply()[0] for _ in range(6)]
        assert codes == [250, 250, 250, 354, 250, 221], (size, codes)
        s.close()
    assert rows(m, "select count(*) from messages")[0][0] == 4


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out",
         "c.pem", "-days", "2", "-subj", "/CN=mailhop.test",
         "-addext", "subjectAltName=DNS:mailhop.test,IP:127.0.0.1"],
        cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return d / "c.pem", d / "k.pem"


@pytest.mark.parametrize("chunk", [None, 1021], ids=["sendall", "c1021"])
def test_sizes_starttls(mailhop, cert, chunk):
    crt, key = cert
    m = mailhop(max_message_size="1m", tls_cert_file=crt, tls_key_file=key)
    ctx = ssl.create_default_context(cafile=str(crt))
    failed = []
    for size in SIZES[::2]:
        r = Raw(m.port)
        assert r.reply()[0] == 220
        assert r.cmd("EHLO client.example")[0] == 250
        assert r.cmd("STARTTLS")[0] == 220
        r.sock = ctx.wrap_socket(r.sock, server_hostname="mailhop.test")
        assert r.cmd("EHLO client.example")[0] == 250
        code, text = transaction(r, message(size, f"tls-{chunk}"), chunk)
        if code != 250:
            failed.append((size, code, text))
        assert r.cmd("QUIT")[0] == 221
        r.close()
    assert not failed, failed
    assert rows(m, "select count(*) from messages")[0][0] == len(SIZES[::2])

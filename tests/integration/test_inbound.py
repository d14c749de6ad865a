"""Inbound SMTP (CONTRACT §3) against the real binary: every accepted
message is in the SQLite queue, every bad input gets its exact reply."""
import os
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, Mailhop, Raw, clean_env, rows


def session(m, ehlo="client.example"):
    r = Raw(m.port)
    code, _ = r.reply()
    assert code == 220
    code, text = r.cmd(f"EHLO {ehlo}")
    assert code == 250
    return r


def stored_body(m, qid):
    return rows(m, "select body from messages where id=?", qid)[0][0]


def queued_id(text):
    assert "queued as" in text, text
    return text.split("queued as ")[1].split()[0]


def test_ehlo_capabilities(mailhop):
    m = mailhop()
    r = Raw(m.port)
    assert r.reply()[0] == 220
    code, text = r.cmd("EHLO client.example")
    assert code == 250
    for ext in ("PIPELINING", "SIZE 26214400", "8BITMIME",
                "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"):
        assert ext in text
    assert "STARTTLS" not in text and "AUTH" not in text
    assert r.cmd("HELO client.example")[0] == 250
    assert r.cmd("QUIT")[0] == 221


def test_message_stored_byte_exact_with_dsn_params(mailhop):
    m = mailhop()
    r = session(m)
    assert r.cmd("MAIL FROM:<sender@a.example> RET=HDRS ENVID=env+2B1 "
                 "SIZE=500")[0] == 250
    assert r.cmd("RCPT TO:<one@b.example> NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;one+2Bx@b.example")[0] == 250
    assert r.cmd("RCPT TO:<two@c.example> NOTIFY=NEVER")[0] == 250
    assert r.cmd("DATA")[0] == 354
    body = (b"Subject: test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"Message-ID: <x@y.example>\r\n\r\nline one\r\n..leading dot\r\n"
            b"\xc3\xa9t\xc3\xa9\r\n")
    r.send(body + b".\r\n")
    code, text = r.reply()
    assert code == 250 and text.startswith("250 2.0.0")
    qid = queued_id(text)
    msg = rows(m, "select sender, envid, ret from messages where id=?", qid)
    assert msg[0][0] == "sender@a.example"
    assert msg[0][1] == "env+1"
    stored = stored_body(m, qid)
    assert stored.startswith(b"Received: from client.example")
    # Date and Message-ID were present: not added; the body is exact
    # (dot-unstuffed).
    expected = body.replace(b"..leading", b".leading")
    assert stored.endswith(expected)
    head = stored[: len(stored) - len(expected)]
    assert head.count(b"Received:") == 1
    assert b"Message-ID:" not in head and b"Date:" not in head
    rc = rows(m, "select address, notify, orcpt, domain, state from "
              "recipients where message_id=? order by idx", qid)
    assert rc[0][0] == "one@b.example" and rc[0][1] == 2 | 4
    assert "one+x@b.example" in rc[0][2]
    assert rc[1][0] == "two@c.example" and rc[1][1] == 1
    assert rc[1][3] == "c.example"


def test_date_and_message_id_added_when_missing(mailhop):
    m = mailhop()
    s = smtplib.SMTP("127.0.0.1", m.port)
    s.sendmail("a@a.example", ["b@b.example"], "Subject: x\r\n\r\nhi\r\n")
    s.quit()
    (body,), = rows(m, "select body from messages")
    head = body.split(b"\r\n\r\n")[0]
    assert head.count(b"\r\nDate: ") == 1
    assert head.count(b"\r\nMessage-ID: <") == 1
    assert body.endswith(b"Subject: x\r\n\r\nhi\r\n")


@pytest.mark.parametrize("data", [
    b"hello world\r\nsecond line\r\n",
    b" indented first line\r\nSubject: not a header now\r\n",
    b"From someone Mon Jan 1\r\nbody\r\n",
], ids=["plain_text", "continuation_first", "mbox_from_line"])
def test_message_without_headers_gets_separator(mailhop, data):
    """Issue 12 item 3: data whose first line is neither a header field
    nor empty gets an empty line between the added headers and itself, so
    its lines stay in the body."""
    m = mailhop()
    r = session(m)
    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(data + b".\r\n")
    assert r.reply()[0] == 250
    (body,), = rows(m, "select body from messages")
    head, sep, rest = body.partition(b"\r\n\r\n")
    assert sep and rest == data, body
    fields = head.split(b"\r\n")
    assert fields[0].startswith(b"Received: ")
    assert sum(f.startswith(b"Date: ") for f in fields) == 1
    assert sum(f.startswith(b"Message-ID: <") for f in fields) == 1
    # Every line of the header section is a field or a continuation.
    assert all(f[:1] in (b" ", b"\t") or b":" in f for f in fields), head


def test_message_with_headers_gets_no_extra_line(mailhop):
    m = mailhop()
    s = smtplib.SMTP("127.0.0.1", m.port)
    s.sendmail("a@a.example", ["b@b.example"],
               "Subject: x\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
               "Message-ID: <a@b>\r\n\r\nhi\r\n")
    s.quit()
    (body,), = rows(m, "select body from messages")
    assert body.startswith(b"Received: ")
    assert body.count(b"\r\n\r\n") == 1
    assert body.endswith(b"\r\nSubject: x\r\nDate: Sun, 29 Nov 2026 "
                         b"12:00:00 +0000\r\nMessage-ID: <a@b>\r\n\r\n"
                         b"hi\r\n")


def test_pipelining_swaks(mailhop, tmp_path):
    m = mailhop()
    p = subprocess.run(
        ["swaks", "--pipeline", "--server", "127.0.0.1", "--port",
         str(m.port), "--from", "a@a.example", "--to",
         "x@b.example,y@b.example,z@c.example", "--body", "pipelined",
         "--h-Subject", "pipe"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert rows(m, "select count(*) from recipients")[0][0] == 3


def test_pipelined_group_replies_in_order(mailhop):
    m = mailhop()
    r = session(m)
    r.send("MAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\n"
           "RCPT TO:<bad address>\r\nRCPT TO:<c@c.example>\r\nDATA\r\n")
    codes = [r.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 501, 250, 354]
    r.send("Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 221]
    assert r.closed()


def test_many_sessions_smtp_source(mailhop):
    m = mailhop()
    p = subprocess.run(
        ["smtp-source", "-c", "-s", "20", "-m", "400", "-l", "2048",
         "-f", "src@a.example", "-t", "dst@b.example",
         f"127.0.0.1:{m.port}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert rows(m, "select count(*) from messages")[0][0] == 400
    assert "event=accepted" in m.log()


@pytest.mark.parametrize("line,code,esc", [
    ("FROB", 500, "5.5.2"),
    ("MAIL FROM:bad", 501, "5.5.4"),
    ("MAIL FROM:<a@a.example> FOO=BAR", 555, "5.5.4"),
    ("RCPT TO:<b@b.example>", 503, "5.5.1"),
    ("DATA", 503, "5.5.1"),
    ("VRFY someone", 252, ""),
])
def test_bad_input_replies(mailhop, line, code, esc):
    m = mailhop()
    r = session(m)
    got, text = r.cmd(line)
    assert got == code, text
    assert esc in text
    # The session goes on after a refusal.
    assert r.cmd("NOOP")[0] == 250


def test_bad_sequence_before_helo(mailhop):
    m = mailhop()
    r = Raw(m.port)
    r.reply()
    code, text = r.cmd("MAIL FROM:<a@a.example>")
    assert code == 503 and "5.5.1" in text


def test_overlong_command_line(mailhop):
    m = mailhop()
    r = session(m)
    code, text = r.cmd("NOOP " + "x" * 600)
    assert code == 500 and "5.5.2" in text
    assert r.cmd("NOOP")[0] == 250  # the rest of the line was discarded
    # MAIL may be longer by what its extensions add.
    code, _ = r.cmd("MAIL FROM:<a@a.example> SIZE=10 BODY=8BITMIME ENVID=" +
                    "e" * 90 + " RET=HDRS")
    assert code == 250


def test_oversize_message_discarded_without_desync(mailhop):
    m = mailhop(max_message_size="10k")
    r = session(m)
    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    big = b"Subject: big\r\n\r\n" + b"y" * 20000 + b"\r\n"
    hidden = b"RSET\r\nMAIL FROM:<evil@a.example>\r\nRCPT TO:<x@b.example>\r\n"
    r.send(big + hidden + b"more\r\n.\r\n")
    code, text = r.reply()
    assert code == 552 and "5.3.4" in text
    assert r.cmd("NOOP")[0] == 250  # next reply is to NOOP, not RSET
    assert rows(m, "select count(*) from messages")[0][0] == 0
    # SIZE= over the limit is refused at MAIL.
    code, text = r.cmd("MAIL FROM:<a@a.example> SIZE=999999")
    assert code == 552 and "5.3.4" in text


def test_too_many_recipients(mailhop):
    m = mailhop(max_recipients=2)
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    assert r.cmd("RCPT TO:<1@b.example>")[0] == 250
    assert r.cmd("RCPT TO:<2@b.example>")[0] == 250
    code, text = r.cmd("RCPT TO:<3@b.example>")
    assert code == 452 and "4.5.3" in text


def test_relay_denied_outside_relay_networks(mailhop):
    m = mailhop(relay_networks="10.0.0.0/8")
    r = session(m)
    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
    code, text = r.cmd("RCPT TO:<b@b.example>")
    assert code == 554 and "5.7.1" in text
    m.wait_log("event=rejected")
    assert "reason=\"relay access denied\"" in m.log()


def test_rejected_lines_have_one_shape(mailhop):
    """CONTRACT §6 `rejected`: every refusal of a policy or a limit logs
    one line with the session, the client, the reply code as a number and
    a reason (a black-box run found the code a string for some causes,
    missing for others, no reason for a mail loop, and no line at all for
    a declared SIZE or too many recipients)."""
    import json

    def rejected(inst):
        inst.wait_log('"rejected"')
        out = []
        for line in inst.log().splitlines():
            if '"event":"rejected"' in line:
                e = json.loads(line)
                assert isinstance(e["code"], int), line
                assert e["reason"] and e["session"] and e["client"], line
                out.append(e["code"])
        return out

    m = mailhop(relay_networks="10.0.0.0/8", max_message_size="10k",
                max_recipients=1, log_format="json")
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example> SIZE=999999")          # 552 SIZE
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<b@b.example>")                        # 554 relay
    r.close()
    time.sleep(0.3)
    first = rejected(m)
    m.stop()
    del m.conf["relay_networks"]
    m.start()
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<1@b.example>")
    r.cmd("RCPT TO:<2@b.example>")                        # 452 limit
    r.cmd("DATA")
    r.send(b"Subject: big\r\n\r\n" + b"y" * 20000 + b"\r\n.\r\n")
    assert r.reply()[0] == 552                            # 552 DATA
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<1@b.example>")
    r.cmd("DATA")
    hops = b"".join(b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000"
                    b"\r\n" for _ in range(120))
    r.send(hops + b"\r\nbody\r\n.\r\n")
    assert r.reply()[0] == 554                            # 554 loop
    r.close()
    time.sleep(0.3)
    assert sorted(first) == [552, 554], first
    assert sorted(rejected(m)) == [452, 552, 554], m.log()


def test_sender_domain_not_allowed(mailhop):
    m = mailhop(allowed_sender_domains="good.example")
    r = session(m)
    code, text = r.cmd("MAIL FROM:<a@evil.example>")
    assert code == 553 and "5.7.1" in text
    assert r.cmd("MAIL FROM:<a@GOOD.example>")[0] == 250
    r.cmd("RSET")
    assert r.cmd("MAIL FROM:<>")[0] == 250


def test_mail_loop_too_many_received(mailhop):
    m = mailhop()
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<b@b.example>")
    assert r.cmd("DATA")[0] == 354
    hops = "".join(f"Received: from h{i}.example by x; "
                   f"Mon, 1 Jan 2024 00:00:00 +0000\r\n" for i in range(51))
    r.send(hops + "Subject: loop\r\n\r\nx\r\n.\r\n")
    code, text = r.reply()
    assert code == 554 and "5.4.6" in text
    assert rows(m, "select count(*) from messages")[0][0] == 0


SMUGGLING = [
    b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r.\n",
]


@pytest.mark.parametrize("eod", SMUGGLING)
def test_smtp_smuggling_payloads(mailhop, eod):
    m = mailhop()
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<b@b.example>")
    assert r.cmd("DATA")[0] == 354
    smuggled = (b"Subject: first\r\n\r\nbody" + eod +
                b"MAIL FROM:<evil@a.example>\r\nRCPT TO:<victim@b.example>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
    r.send(smuggled)
    code, text = r.reply()
    # Exactly one message, whatever the payload: the smuggled commands are
    # message content (normalized), never a second transaction.
    assert code == 250, text
    assert r.cmd("NOOP")[0] == 250
    assert rows(m, "select count(*) from messages")[0][0] == 1
    assert rows(m, "select count(*) from recipients")[0][0] == 1
    body = rows(m, "select body from messages")[0][0]
    assert b"\r\n" in body
    # No bare CR or LF survives in the stored message.
    assert body.replace(b"\r\n", b"").count(b"\n") == 0
    assert body.replace(b"\r\n", b"").count(b"\r") == 0


def test_error_limit_closes_session(mailhop):
    m = mailhop()
    r = session(m)
    for i in range(20):
        assert r.cmd("FROB")[0] == 500
    code, text = r.cmd("FROB")
    # The 21st error gets its reply and then 421.
    if code == 500:
        code, text = r.reply()
    assert code == 421
    assert r.closed()


def test_idle_timeout(mailhop):
    m = mailhop(smtp_timeout="1s")
    r = session(m)
    t = time.time()
    code, text = r.reply()
    assert code == 421
    assert r.closed()
    # not before the timeout; the upper bound is generous (loaded machine)
    assert 0.9 <= time.time() - t < 10


def test_slowloris_command_line(mailhop):
    """A client dribbling one command byte at a time is cut off after
    smtp_timeout although it is never idle."""
    m = mailhop(smtp_timeout="2s")
    r = session(m)
    t = time.time()
    closed = False
    for ch in "MAIL FROM:<a@a.example>" * 10:
        try:
            r.send(ch)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.2)
        if time.time() - t > 8:
            break
    assert closed or r.closed(3)
    assert time.time() - t < 10


def test_slow_data_below_min_rate(mailhop):
    m = mailhop(smtp_timeout="2s", min_data_rate="1000")
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<b@b.example>")
    assert r.cmd("DATA")[0] == 354
    t = time.time()
    closed = False
    while time.time() - t < 10:
        try:
            r.send(b"x" * 100 + b"\r\n")  # ~200 bytes/s
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.5)
        if r.closed(0.01):
            closed = True
            break
    assert closed
    assert rows(m, "select count(*) from messages")[0][0] == 0


def test_honest_slow_upload_above_min_rate(mailhop):
    m = mailhop(smtp_timeout="1s", min_data_rate="500")
    r = session(m)
    r.cmd("MAIL FROM:<a@a.example>")
    r.cmd("RCPT TO:<b@b.example>")
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: slow\r\n\r\n")
    t = time.time()
    while time.time() - t < 3:
        r.send(b"y" * 300 + b"\r\n")  # ~1200 bytes/s
        time.sleep(0.25)
    r.send(b".\r\n")
    assert r.reply()[0] == 250


def test_max_sessions(mailhop):
    m = mailhop(max_sessions=2)
    a, b = Raw(m.port), Raw(m.port)
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    c = Raw(m.port)
    code, text = c.reply()
    assert code == 421 and "4.3.2" in text
    assert c.closed()


def test_sigkill_after_250_loses_nothing(mailhop):
    m = mailhop()
    acked = []
    stop = threading.Event()

    def sender(n):
        try:
            s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
            for i in range(200):
                if stop.is_set():
                    break
                subj = f"k{n}-{i}"
                s.sendmail("a@a.example", ["b@b.example"],
                           f"Subject: {subj}\r\n\r\nx\r\n")
                acked.append(subj)
        except Exception:
            pass

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    assert acked, "nothing was acknowledged before the kill"
    m2 = Mailhop(m.dir, **{k: v for k, v in m.conf.items()
                           if k not in ("listen",)})
    m2.start()
    bodies = [b for (b,) in rows(m2, "select body from messages")]
    stored = set()
    for b in bodies:
        for line in b.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                stored.add(line[9:].decode())
    missing = [s for s in acked if s not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    m2.stop()


def test_second_serve_on_same_queue_exits_2(mailhop):
    m = mailhop()
    other = Mailhop(m.dir, queue_path=m.conf["queue_path"],
                    admin_socket=str(m.dir / "other.sock"))
    other.log_path = m.dir / "other.log"
    other.start(wait=False)
    assert other.proc.wait(20) == 2
    assert str(m.proc.pid) in other.log()


def test_sigterm_keeps_queue(mailhop):
    m = mailhop()
    s = smtplib.SMTP("127.0.0.1", m.port)
    s.sendmail("a@a.example", ["b@b.example"], "Subject: keep\r\n\r\nx\r\n")
    s.quit()
    assert m.stop() == 0
    assert rows(m, "select count(*) from messages")[0][0] == 1


def test_ipv6_listener_and_v6_relay_network(mailhop):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    from conftest import free_port
    port = free_port("::1")
    m = mailhop(listen=f"[::1]:{port}")
    s = smtplib.SMTP("::1", port, timeout=10)
    s.sendmail("a@a.example", ["b@b.example"], "Subject: v6\r\n\r\nx\r\n")
    s.quit()
    assert "client=::1" in m.log()
    assert rows(m, "select count(*) from messages")[0][0] == 1


def test_user_switch_after_binding(mailhop, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    import shutil
    import tempfile
    qdir = tempfile.mkdtemp(dir="/tmp")  # pytest's tmp dirs are 0700 root
    os.chmod(qdir, 0o777)
    try:
        _user_switch(mailhop, qdir)
    finally:
        shutil.rmtree(qdir)


def _user_switch(mailhop, qdir):
    m = mailhop(user="65534:65534", queue_path=f"{qdir}/q.db")

    def uids():
        with open(f"/proc/{m.proc.pid}/status") as f:
            return [l for l in f if l.startswith("Uid:")][0].split()[1:3]
    # The switch follows the listeners' "listening" lines (which the
    # fixture waits for) on the same start-up path: give it a moment.
    deadline = time.time() + 10
    while uids() != ["65534", "65534"] and time.time() < deadline:
        time.sleep(0.02)
    assert uids() == ["65534", "65534"]
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    # Big enough to spill the DATA spool to a file in the queue directory.
    s.sendmail("a@a.example", ["b@b.example"],
               "Subject: big\r\n\r\n" + ("y" * 100 + "\r\n") * 2000)
    s.quit()
    assert m.stop() == 0
    assert os.stat(m.conf["queue_path"]).st_uid == 65534
    assert rows(m, "select count(*) from messages")[0][0] == 1


def test_user_without_access_to_queue_dir_fails_clearly(mailhop, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    m = mailhop(start=False, user="65534:65534")  # tmp_path is 0700 root
    m.start(wait=False)
    assert m.proc.wait(20) == 2
    assert "not writable" in m.log() and "65534" in m.log()


def test_long_pipelined_burst_gets_every_reply(mailhop):
    """Far more pipelined commands than the reply buffer holds, in one
    write: every reply arrives without the client sending anything else."""
    m = mailhop(max_recipients=1000)
    r = session(m)
    n = 600
    burst = "MAIL FROM:<a@a.example>\r\n" + "".join(
        f"RCPT TO:<r{i}@b.example>\r\n" for i in range(n)) + "RSET\r\n"
    r.send(burst)
    codes = [r.reply()[0] for _ in range(n + 2)]
    assert codes == [250] * (n + 2)

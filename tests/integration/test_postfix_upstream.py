"""A private Postfix as the upstream client (issue 12 item 1): Postfix
relays 66,000, 80,000 and 150,000-byte messages into mailhop (its
relayhost), and every one is accepted at the first attempt.  Before the
fix each of them got `451 4.3.0 queue write failed` on every retry.

The Postfix instance is private: its own config_directory, queue_directory
and data_directory in the test's temp dir, smtpd on a loopback port,
`relayhost = [127.0.0.1]:<mailhop>`; it is stopped with `postfix -c DIR
stop` and, failing that, only its own master's process tree is killed by
PID.  Needs root (Postfix drops to its mail_owner) and the postfix package;
skipped otherwise.
"""
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, rows

SIZES = (66000, 80000, 150000)

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def wait_banner(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0) as s:
                s.settimeout(2.0)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class PrivatePostfix:
    def __init__(self, tmp, relay_port):
        self.tmp = tmp
        self.port = free_port()
        self.etc = tmp / "pf-etc"
        spool = tmp / "pf-spool"
        data = tmp / "pf-data"
        for d in (self.etc, spool, data):
            d.mkdir()
        os.chmod(tmp, 0o755)
        shutil.chown(data, "postfix")
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.etc / "main.cf").write_text("")
        self.maillog = tmp / "maillog"
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.etc),
            "queue_directory": str(spool),
            "data_directory": str(data),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "upstream.example",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{relay_port}",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(tmp),
            "smtp_tls_security_level": "none",
            # Retry soon, so a refusal would show as a second attempt.
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
        }
        subprocess.run(["postconf", "-c", str(self.etc), "-e"] +
                       [f"{k}={v}" for k, v in settings.items()],
                       check=True, timeout=30, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        r = subprocess.run(["postfix", "-c", str(self.etc), "start"],
                           capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        pidfile = spool / "pid" / "master.pid"
        self.pid = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.pid is None:
            try:
                self.pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if r.returncode != 0 or self.pid is None or \
                not wait_banner(self.port, 20):
            self.stop()
            raise AssertionError(f"postfix did not start: {r.stderr!r} "
                                 f"{self.log()}")

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.etc), "stop"],
                       capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
        if self.pid is None:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(
                f"/proc/{self.pid}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{self.pid}"):
            for p in reversed(descendants(self.pid)):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


def message(size, tag):
    head = (f"From: app@app.example\r\nTo: user@dest.example\r\n"
            f"Subject: via postfix {size} {tag}\r\n\r\n").encode()
    line = b"0123456789" * 7 + b"abcdef\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 2] + b"\r\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("postfix"),
                    reason="a private Postfix needs root and postfix")
def test_postfix_relays_sizes_into_mailhop(mailhop, tmp_path):
    m = mailhop()
    # Postfix's mail_owner must reach its data directory: pytest's own
    # temp root is 0700, so the instance lives in a dir of its own.
    pf_dir = Path(tempfile.mkdtemp(prefix="mailhop-postfix-"))
    try:
        pf = PrivatePostfix(pf_dir, m.port)
    except BaseException:
        shutil.rmtree(pf_dir, ignore_errors=True)
        raise
    try:
        for size in SIZES:
            with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
                s.sendmail("app@app.example", ["user@dest.example"],
                           message(size, "t"))
        # Postfix hands each message to mailhop; wait for all three.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if m.log().count("event=accepted") >= len(SIZES):
                break
            time.sleep(0.2)
        log = pf.log()
        assert m.log().count("event=accepted") == len(SIZES), (m.log(), log)
        # Accepted at the first attempt: Postfix logged no deferral.
        assert "status=deferred" not in log, log
        assert log.count("status=sent") == len(SIZES), log
        assert "queue write failed" not in m.log()
        stored = rows(m, "select size from messages")
        assert len(stored) == len(SIZES)
    finally:
        pf.stop()
        shutil.rmtree(pf_dir, ignore_errors=True)

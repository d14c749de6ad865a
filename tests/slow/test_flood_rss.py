"""Memory given back after a flood (issue 12 item 6; issue 21's idle
connection target).  Slow (about a minute): not part of the default
integration run.  Run it on its own:

    MAILHOP_BIN=$PWD/build/mailhop python3 -m pytest -q tests/slow

Five bursts of 10,000 connections that each read the greeting, say EHLO,
read the reply and then sit idle; all close; the next burst follows.  Checks:
  - RSS after each burst has closed stays within 10 MB of its value
    before the first (glibc keeps freed chunks unless they are given back);
  - the memory one idle connection holds after EHLO (RSS growth during the
    burst / connections) is at most 4 KiB (issue 21; printed as well).
Use the plain build: ASan's allocator keeps freed memory in quarantine, so
RSS says nothing there (the test skips itself under ASan).
"""
import json
import resource
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from conftest import Mailhop  # noqa: E402

CONNS = 10000
BURSTS = 5


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def is_asan(binary):
    try:
        return b"__asan_init" in Path(binary).read_bytes()
    except OSError:
        return False


def wait_sessions(m, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = m.cli("status", "--json")
        if r.returncode == 0 and json.loads(r.stdout)["sessions"] == n:
            return
        time.sleep(0.2)
    raise AssertionError(f"sessions did not reach {n}")


def burst(port):
    socks = []
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += s.recv(512)
        s.sendall(b"EHLO flood.example\r\n")
        buf = b""
        while b"\r\n250 " not in b"\r\n" + buf:
            buf += s.recv(4096)
        socks.append(s)
    return socks


@pytest.fixture
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The clients here and the sessions in mailhop (which inherits the
    # limit) each need CONNS descriptors.
    want = min(hard, 2 * CONNS)
    if want < CONNS + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_rss_returns_after_five_floods(tmp_path, nofile):
    from conftest import BIN
    if is_asan(BIN):
        pytest.skip("RSS under ASan's allocator means nothing")
    m = Mailhop(tmp_path, max_sessions=CONNS + 100, smtp_timeout="10m")
    m.start()
    try:
        # Warm up: one session, so start-up allocations are in the baseline.
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", m.port), timeout=10)
            c.recv(512)
            c.sendall(b"EHLO w.example\r\nQUIT\r\n")
            while c.recv(4096):
                pass
            c.close()
        time.sleep(0.5)
        base = rss_kb(m.proc.pid)
        after = []
        per_conn = []
        for i in range(BURSTS):
            socks = burst(m.port)
            time.sleep(0.3)
            peak = rss_kb(m.proc.pid)
            per_conn.append((peak - base) * 1024 / CONNS)
            for c in socks:
                c.close()
            socks = []
            wait_sessions(m, 0)
            time.sleep(0.5)
            after.append(rss_kb(m.proc.pid))
        print(f"\nbaseline RSS {base} KiB; per idle connection after EHLO "
              f"{', '.join(f'{b:.0f}' for b in per_conn)} bytes; RSS after "
              f"each burst closed: {after} KiB")
        for a in after:
            assert a - base <= 10 * 1024, (base, after)
        assert max(per_conn) <= 4096, per_conn
    finally:
        m.stop()

"""The free-space reserve (issue 12 item 5, CONTRACT queue_minfree) on a
real small file system: the queue on its own tmpfs (root only; skipped
where mounting is not allowed).  mailhop refuses new mail with `452 4.3.1`
before the disk is full — at MAIL when the free space is under
queue_minfree or SIZE= would cross it, at DATA when the rest cannot hold
the message twice — and takes mail again by itself once space returns.
"""
import os
import subprocess
import time

import pytest

from conftest import Raw, rows


@pytest.fixture
def tmpfs(tmp_path):
    d = tmp_path / "q"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs",
                        str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def free_bytes(d):
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def mail_code(m, size=None):
    r = Raw(m.port)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO c.example")[0] == 250
    p = f" SIZE={size}" if size else ""
    code, text = r.cmd(f"MAIL FROM:<a@a.example>{p}")
    r.cmd("QUIT")
    r.close()
    return code, text


def wait_code(m, want, size=None, timeout=30):
    """The figure is refreshed every second on the pool: ask until the
    answer changes (order, not time, is what is checked)."""
    deadline = time.time() + timeout
    while True:
        code, text = mail_code(m, size)
        if code == want or time.time() > deadline:
            return code, text
        time.sleep(0.2)


def test_reserve_on_a_small_tmpfs(mailhop, tmpfs):
    m = mailhop(queue_path=tmpfs / "queue.db", queue_minfree="16m",
                max_message_size="30m")
    # A message goes in while there is room.
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO c.example")
    assert r.cmd("MAIL FROM:<a@a.example> SIZE=1000")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: x\r\n\r\nbefore\r\n.\r\n")
    assert r.reply()[0] == 250
    r.close()

    # SIZE= that would cross the floor: 452 at MAIL.
    room = free_bytes(tmpfs) - 16 * 1024 * 1024
    code, text = wait_code(m, 452, size=room + 1024 * 1024)
    assert code == 452 and "4.3.1" in text, text

    # Fill the file system to just under the floor: every MAIL gets 452.
    filler = tmpfs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free_bytes(tmpfs) - 15 * 1024 * 1024))
    code, text = wait_code(m, 452)
    assert code == 452 and "4.3.1" in text, text
    assert "Insufficient system storage" in text

    # Above the floor but not room for twice max_message_size: MAIL is
    # taken, DATA is refused before 354 (nothing half-received).
    filler.unlink()
    with open(filler, "wb") as f:
        f.write(b"\0" * (free_bytes(tmpfs) - 20 * 1024 * 1024))
    assert wait_code(m, 250)[0] == 250
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO c.example")
    assert r.cmd("MAIL FROM:<a@a.example>")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    code, text = r.cmd("DATA")
    assert code == 452 and "4.3.1" in text, text
    r.close()

    # Space comes back: mail is taken again, without a restart.
    filler.unlink()
    assert wait_code(m, 250, size=1000)[0] == 250
    r = Raw(m.port)
    r.reply()
    r.cmd("EHLO c.example")
    assert r.cmd("MAIL FROM:<a@a.example> SIZE=1000")[0] == 250
    assert r.cmd("RCPT TO:<b@b.example>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: y\r\n\r\nafter\r\n.\r\n")
    assert r.reply()[0] == 250
    r.close()
    assert rows(m, "select count(*) from messages")[0][0] == 2
    m.stop()

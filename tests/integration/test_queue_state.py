"""The queue's state across a restart, a full disk, silent admin clients
and a step of the system clock (issue 12 items 5 and 7, issue 14),
black-box: the real binary and a relayhost on loopback."""
import json
import os

from aiosmtpd.controller import Controller

from conftest import free_port
from test_admin import (SinkHandler, admin, fill_queue, restart, send, status,
                        wait_until)

N_QUEUED = 20000


def test_status_counts_are_right_while_the_queue_loads(mailhop):
    dead = free_port()
    m = mailhop(relayhost=f"[127.0.0.1]:{dead}", relayhost_tls="none",
                retry_schedule="1h")
    admin(m, "pause")
    send(m, rcpts=("bob@b.example", "carol@c.example"))
    assert m.stop() == 0
    fill_queue(m, N_QUEUED)
    # The first status that answers after the restart comes while the load
    # of 20,000 messages is (usually) still under way: the counts must be
    # the whole queue's all the same, and say that it is loading.
    st = restart(m)
    seen_loading = "loading" in st
    for st in [st] + [status(m) for _ in range(20)]:
        assert st["queue"]["messages"] == N_QUEUED, st
        assert st["queue"]["recipients"] == 2 * N_QUEUED, st
        assert st.get("loading", True) is True, st
        seen_loading |= "loading" in st

    # Once loaded the key goes away (CONTRACT §5's set) and the counts stay.
    def loaded():
        s = status(m)
        return None if "loading" in s else s
    st = wait_until(loaded, timeout=120)
    assert st["queue"]["messages"] == N_QUEUED
    assert st["queue"]["recipients"] == 2 * N_QUEUED
    print(f"loading seen: {seen_loading}")


def test_failed_delete_leaves_the_message_scheduled(mailhop, tmp_path):
    full = tmp_path / "disk-full"
    dead = free_port()
    m = mailhop(start=False, relayhost=f"[127.0.0.1]:{dead}",
                relayhost_tls="none", retry_schedule="1h")
    m.start(env={"MAILHOP_DEBUG_ENOSPC_FILE": str(full)})
    admin(m, "pause")
    send(m)
    (msg,) = admin(m, "queue")[0]["messages"]
    full.write_text("")  # the disk is full from now
    (r,) = admin(m, f"delete {msg['id']}")
    assert "No space left on device" in r["error"], r
    st = status(m)
    assert st["queue"]["messages"] == 1 and st["queue"]["held"] == 0, st
    assert [x["id"] for x in admin(m, "queue")[0]["messages"]] == [msg["id"]]
    # Still scheduled: a flush finds it.
    assert admin(m, f"flush {msg['id']}")[0] == {"ok": True, "flushed": 1}
    os.unlink(full)  # space again
    assert admin(m, f"delete {msg['id']}")[0] == {"ok": True}
    st = status(m)
    assert st["queue"]["messages"] == 0, st
    assert admin(m, "queue")[0]["messages"] == []


def test_silent_admin_clients_do_not_lock_out_status(mailhop):
    """Sixteen clients that connect and say nothing (issue 12): the health
    check still gets its answer, at once, by taking the slot of the one
    idle the longest."""
    import socket
    m = mailhop()
    silent = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(m.conf["admin_socket"])
            silent.append(s)
        for _ in range(3):  # and again: each time another one gives way
            r = m.cli("status", "--json")
            assert r.returncode == 0, r.stderr
            assert "queue" in json.loads(r.stdout)
        # The first silent client (idle the longest) was closed for it.
        silent[0].settimeout(30)
        assert silent[0].recv(1) == b""
    finally:
        for s in silent:
            s.close()


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def test_retry_follows_the_schedulers_clock_across_a_clock_step(mailhop,
                                                                tmp_path):
    """Issue 14, two clocks: the system clock steps an hour ahead (NTP)
    while mailhop runs; a recipient deferred after that is retried after
    its 2 s, not an hour and 2 s later.  libfaketime moves only the wall
    clock (CLOCK_REALTIME), as a step does; the monotonic clock goes on."""
    assert os.path.exists(FAKETIME), "libfaketime missing: scripts/deps --test"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    sink_port = free_port()
    h = SinkHandler()
    h.mode = "defer"
    c = Controller(h, hostname="127.0.0.1", port=sink_port)
    c.start()
    try:
        m = mailhop(start=False, relayhost=f"[127.0.0.1]:{sink_port}",
                    relayhost_tls="none", retry_schedule="2s")
        m.start(env={
            "LD_PRELOAD": FAKETIME,
            "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            # ASan wants to be first; libfaketime only wraps clock calls.
            "ASAN_OPTIONS": "verify_asan_link_order=0",
        })
        offset.write_text("+3600\n")  # the step
        send(m)
        m.wait_log("event=deferred", timeout=30)
        h.mode = "accept"
        # Retried after its 2 s: generous bound, far below the hour.
        wait_until(lambda: len(h.messages) == 1, timeout=60)
        assert wait_until(lambda: status(m)["queue"]["messages"] == 0)
    finally:
        c.stop()

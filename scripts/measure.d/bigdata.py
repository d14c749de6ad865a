#!/usr/bin/python3
"""scripts/measure bigdata: mailhop's memory while N concurrent sessions each
send one large message (default 100 x 20 MiB, then 10 x 20 MiB).

mailhop runs with relayhost [127.0.0.1]:9, relayhost_tls=none (nothing is
delivered: connection refused, deferred), its queue in a temp dir on local
disk with room checked first. VmRSS/VmHWM of mailhop every 100 ms. Phase 1:
one session alone (RSS after it). Phase 2: N sessions at once. Then mailhop
is stopped and the queue is checked with sqlite3 (rows, sizes).
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Mailhop, Sampler, Smtp, log, machine, make_tmp,  # noqa
                    rmtree, sqlite_rows, status_kib)

LINE = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"


def make_body(size):
    n = size // len(LINE)
    return LINE * n + b"x" * max(0, size - n * len(LINE) - 2) + b"\r\n"


def send_one(port, idx, body, out, timeout):
    t0 = time.monotonic()
    rec = {"idx": idx, "code": None, "err": None}
    try:
        c = Smtp(port, timeout)
        code, _ = c.reply()
        if code != 220:
            raise RuntimeError(f"greeting {code}")
        code, _ = c.cmd(b"EHLO big.measure.example")
        if code != 250:
            raise RuntimeError(f"EHLO {code}")
        size = len(body) + 64
        code, _ = c.cmd(b"MAIL FROM:<big@measure.example> SIZE=%d" % size)
        if code != 250:
            raise RuntimeError(f"MAIL {code}")
        code, _ = c.cmd(b"RCPT TO:<sink%d@dest.example>" % idx)
        if code != 250:
            raise RuntimeError(f"RCPT {code}")
        code, _ = c.cmd(b"DATA")
        if code != 354:
            raise RuntimeError(f"DATA {code}")
        c.s.sendall(b"Subject: big %d\r\n\r\n" % idx)
        mv = memoryview(body)
        for off in range(0, len(body), 1 << 20):
            c.s.sendall(mv[off:off + (1 << 20)])
        t_data = time.monotonic()
        c.s.sendall(b".\r\n")
        code, text = c.reply()
        rec["code"] = code
        rec["reply"] = text.decode("latin-1")[:120]
        rec["send_s"] = t_data - t0
        c.close()
    except Exception as e:  # noqa: BLE001 - recorded and reported
        rec["err"] = repr(e)
    rec["t_done"] = time.monotonic()
    rec["elapsed_s"] = rec["t_done"] - t0
    out.append(rec)


def run_round(n, size, timeout):
    body = make_body(size)
    need = int((n + 1) * size * 3.2) + (1 << 30)  # spools + WAL + DB
    tmp, fs = make_tmp(f"mh-bigdata-{n}-", need)
    res = {"sessions": n, "message_bytes": size, "tmp": tmp,
           "filesystem": fs.splitlines()[-1] if fs else ""}
    mh = Mailhop(tmp, {"max_message_size": "30m",
                       "relayhost": "[127.0.0.1]:9",
                       "relayhost_tls": "none",
                       "dns_servers": "127.0.0.1:9",
                       "max_sessions": "2000"})
    sampler = Sampler(mh.pid, 0.1)
    sampler.start()
    try:
        time.sleep(0.5)
        res["rss_idle_kib"] = status_kib(mh.pid, "VmRSS")
        # Phase 1: one session alone.
        one = []
        send_one(mh.port, 0, body, one, timeout)
        time.sleep(0.5)
        res["one"] = {k: one[0].get(k) for k in ("code", "err", "elapsed_s")}
        res["rss_after_one_kib"] = status_kib(mh.pid, "VmRSS")
        res["hwm_after_one_kib"] = status_kib(mh.pid, "VmHWM")
        # Phase 2: n sessions at once.
        outs = []
        ths = [threading.Thread(target=send_one,
                                args=(mh.port, i, body, outs, timeout))
               for i in range(1, n + 1)]
        t0 = time.monotonic()
        for t in ths:
            t.start()
        for t in ths:
            t.join(timeout + 30)
        t1 = time.monotonic()
        time.sleep(0.5)
        ok = [r for r in outs if r["code"] == 250]
        res["accepted_250"] = len(ok)
        res["failures"] = [r for r in outs if r["code"] != 250][:5]
        res["time_to_accept_all_s"] = round(
            max(r["t_done"] for r in outs) - t0, 2) if outs else None
        res["session_elapsed_s"] = {
            "min": round(min(r["elapsed_s"] for r in outs), 2),
            "max": round(max(r["elapsed_s"] for r in outs), 2)}
        res["peak_rss_during_kib"] = sampler.peak_rss(t0, t1 + 0.5)
        res["hwm_end_kib"] = status_kib(mh.pid, "VmHWM")
        res["rss_end_kib"] = status_kib(mh.pid, "VmRSS")
        res["samples"] = len(sampler.samples)
        res["status"] = mh.status()
    finally:
        sampler.stop()
        res["mailhop_exit"] = mh.stop(30)
    # Verify the queue with mailhop stopped.
    rows = sqlite_rows(mh.db, "SELECT count(*), min(size), max(size), "
                              "min(length(body)), max(length(body)), "
                              "sum(length(body)) FROM messages")
    cnt, mins, maxs, minb, maxb, sumb = rows[0]
    res["queue"] = {"messages": int(cnt), "min_size": int(mins),
                    "max_size": int(maxs), "min_body_len": int(minb),
                    "max_body_len": int(maxb), "sum_body_len": int(sumb)}
    rc = sqlite_rows(mh.db, "SELECT count(*) FROM recipients "
                            "WHERE state IN (0,1)")
    res["queue"]["pending_recipients"] = int(rc[0][0])
    res["queue"]["db_file_bytes"] = os.path.getsize(mh.db)
    res["queue_ok"] = (int(cnt) == n + 1 and int(minb) >= size)
    res["timeline_csv"] = os.path.join(tmp, "rss.csv")
    with open(res["timeline_csv"], "w") as f:
        f.write("t_s,rss_kib,hwm_kib\n")
        for t, rss, hwm in sampler.samples:
            f.write(f"{t - sampler.samples[0][0]:.2f},{rss},{hwm}\n")
    return res, tmp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="100,10")
    ap.add_argument("--size-mib", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=150)
    ap.add_argument("--keep", action="store_true", help="keep temp dirs")
    ap.add_argument("--json")
    a = ap.parse_args()
    size = int(a.size_mib * (1 << 20))
    out = {"machine": machine(), "rounds": []}
    for n in [int(x) for x in a.sessions.split(",")]:
        log(f"bigdata: {n} sessions x {size} bytes")
        res, tmp = run_round(n, size, a.timeout)
        out["rounds"].append(res)
        mib = lambda k: res[k] / 1024  # noqa: E731
        print(f"== {n} concurrent sessions x {size / 2**20:.0f} MiB ==")
        print(f"RSS idle {mib('rss_idle_kib'):.1f} MiB; after 1 session "
              f"{mib('rss_after_one_kib'):.1f} MiB (HWM "
              f"{mib('hwm_after_one_kib'):.1f}); peak sampled during {n} "
              f"{mib('peak_rss_during_kib'):.1f} MiB; VmHWM at end "
              f"{mib('hwm_end_kib'):.1f} MiB; RSS at end "
              f"{mib('rss_end_kib'):.1f} MiB")
        print(f"accepted 250: {res['accepted_250']}/{n}; time to accept all "
              f"{res['time_to_accept_all_s']} s (sessions "
              f"{res['session_elapsed_s']['min']}..."
              f"{res['session_elapsed_s']['max']} s); 1st alone "
              f"{res['one']['elapsed_s']:.2f} s")
        q = res["queue"]
        print(f"queue: {q['messages']} messages (expect {n + 1}), size "
              f"{q['min_size']}..{q['max_size']}, body bytes "
              f"{q['min_body_len']}..{q['max_body_len']}, pending rcpts "
              f"{q['pending_recipients']}, db {q['db_file_bytes'] / 2**30:.2f}"
              f" GiB; ok={res['queue_ok']}; mailhop exit "
              f"{res['mailhop_exit']}")
        if res["failures"]:
            print("failures:", json.dumps(res["failures"]))
        print("status:", res["status"])
        sys.stdout.flush()
        if not a.keep:
            rmtree(tmp)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    ok = all(r["queue_ok"] and r["accepted_250"] == r["sessions"]
             for r in out["rounds"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

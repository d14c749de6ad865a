#!/usr/bin/python3
"""scripts/measure fsync: which threads of mailhop call fsync/fdatasync/
sync_file_range while it accepts and relays M messages.

mailhop runs under `strace -f -ttt -y -e trace=fsync,fdatasync,
sync_file_range,listen -o FILE`, relaying to smtp-sink. smtp-source -s 20
-m M injects. The main (loop) thread is the TID equal to mailhop's PID;
start-up ends at its last listen() call (the listeners; `event=listening`
is logged right after, with 1 s resolution only, so the syscall is the
precise boundary). Counts per thread and phase: start-up, run, shutdown
(after our SIGTERM).
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Mailhop, free_port, log, machine, make_tmp, rmtree,  # noqa
                    stop_proc, wait_banner)

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
CALL = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(fsync|fdatasync|sync_file_range|"
                  r"listen)\((\d+)(<[^>]*>)?")


def sink_count(path):
    try:
        with open(path, "rb") as f:
            m = re.findall(rb"mesg=(\d+)", f.read()[-400:])
        return int(m[-1]) if m else 0
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp, fs = make_tmp("mh-fsync-", 2 << 30)
    res = {"machine": machine(), "messages": a.messages,
           "filesystem": fs.splitlines()[-1]}
    trace = os.path.join(tmp, "strace.out")
    sport = free_port()
    sout = open(os.path.join(tmp, "sink.out"), "wb")
    scmd = [SMTP_SINK, "-c"]
    if os.geteuid() == 0:
        scmd += ["-u", "nobody"]
    sink = subprocess.Popen(scmd + [f"127.0.0.1:{sport}", "1000"],
                            stdout=sout, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    mh = None
    comms = {}
    try:
        if not wait_banner(sport, 10):
            raise RuntimeError("smtp-sink did not start")
        wrap = ["strace", "-f", "-ttt", "-y", "-e",
                "trace=fsync,fdatasync,sync_file_range,listen", "-o", trace]
        mh = Mailhop(tmp, {"relayhost": f"[127.0.0.1]:{sport}",
                           "relayhost_tls": "none",
                           "dns_servers": "127.0.0.1:9"}, wrap=wrap)
        res["mailhop_pid"] = mh.pid
        res["strace_cmd"] = " ".join(wrap + mh.cmd)

        halt = threading.Event()

        def names():  # thread names, sampled while it runs
            while not halt.is_set():
                try:
                    for t in os.listdir(f"/proc/{mh.pid}/task"):
                        try:
                            with open(f"/proc/{mh.pid}/task/{t}/comm") as f:
                                comms[int(t)] = f.read().strip()
                        except OSError:
                            pass
                except OSError:
                    pass
                halt.wait(0.05)
        nt = threading.Thread(target=names, daemon=True)
        nt.start()
        t0 = time.monotonic()
        src = subprocess.run([SMTP_SOURCE, "-s", str(a.sessions), "-m",
                              str(a.messages), "-f", "src@measure.example",
                              "-t", "dst@dest.example",
                              f"127.0.0.1:{mh.port}"],
                             capture_output=True, timeout=150,
                             stdin=subprocess.DEVNULL)
        res["smtp_source_rc"] = src.returncode
        res["accept_s"] = round(time.monotonic() - t0, 2)
        deadline = time.monotonic() + 120
        while sink_count(sout.name) < a.messages and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        res["delivered_at_sink"] = sink_count(sout.name)
        res["end_to_end_s"] = round(time.monotonic() - t0, 2)
        res["status"] = mh.status()
        halt.set()
        nt.join(2)
        res["t_sigterm"] = time.time()
        res["mailhop_exit"] = mh.stop(30)   # strace exits with mailhop's rc
    finally:
        if mh and mh.proc.poll() is None:
            mh.stop()
        stop_proc(sink)
        sout.close()

    main_tid = res["mailhop_pid"]
    calls = []
    with open(trace) as f:
        for line in f:
            m = CALL.match(line)
            if m:
                calls.append((int(m.group(1)), float(m.group(2)),
                              m.group(3), m.group(5) or m.group(4)))
    listens = [c[1] for c in calls if c[2] == "listen" and c[0] == main_tid]
    t_start = max(listens) if listens else res.get("t_sigterm")
    res["t_last_listen"] = t_start
    res["t_first_banner_seen"] = mh.t_ready_wall
    per = collections.defaultdict(collections.Counter)
    files = collections.Counter()
    main_after = []
    for tid, ts, name, fd in calls:
        if name == "listen":
            continue
        phase = ("startup" if ts <= t_start else
                 "shutdown" if ts >= res["t_sigterm"] else "run")
        who = "main" if tid == main_tid else f"tid {tid}"
        per[f"{who} ({comms.get(tid, '?')})"][f"{phase} {name}"] += 1
        files[(name, re.sub(r"<|>", "", str(fd)))] += 1
        if tid == main_tid and phase != "startup":
            main_after.append((ts, name, fd, phase))
    res["per_thread"] = {k: dict(v) for k, v in sorted(per.items())}
    res["per_file"] = {f"{n} {p}": c for (n, p), c in files.most_common()}
    res["main_thread_after_startup"] = main_after[:20]
    res["main_thread_after_startup_count"] = len(main_after)
    res["main_thread_during_run_count"] = sum(
        1 for m in main_after if m[3] == "run")
    res["trace_file"] = trace

    print(f"== fsync: {a.messages} messages, smtp-source -s {a.sessions} ==")
    print(f"accepted in {res['accept_s']} s (smtp-source rc "
          f"{res['smtp_source_rc']}), {res['delivered_at_sink']} at the sink "
          f"after {res['end_to_end_s']} s; mailhop exit {res['mailhop_exit']}")
    print(f"main TID {main_tid}; start-up ends at its last listen() "
          f"{t_start:.6f} (first 220 seen by the harness at "
          f"{mh.t_ready_wall:.6f})")
    for k, v in res["per_thread"].items():
        print(f"  {k}: " + ", ".join(f"{n}={c}" for n, c in sorted(v.items())))
    print("per file:", json.dumps(res["per_file"]))
    print(f"main thread fsync-family calls after start-up: "
          f"{res['main_thread_after_startup_count']} (during the run: "
          f"{res['main_thread_during_run_count']})")
    for m in main_after[:10]:
        print("   ", m)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if not a.keep:
        rmtree(tmp)
    else:
        print("kept", tmp)
    ok = (res["main_thread_during_run_count"] == 0
          and res["delivered_at_sink"] >= a.messages)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

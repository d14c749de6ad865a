#!/usr/bin/python3
"""scripts/measure dns: is the loop responsive while many DNS lookups are
pending?

A tests/integration/dnsserver.py DNSServer where every rN.test behaves
`drop` (never answers). mailhop with dns_timeout=10s, max_outbound=1000,
max_per_destination=1000, retry_schedule=1h. Probe = P sequential SMTP
sessions, each timing connect->220, EHLO and 50 NOOPs. Baseline probe on the
idle server; then N messages, each to a distinct domain rN.test, so N MX
lookups are due at once (the resolver holds at most 128 queries in flight
and queues the rest, FIFO); then the same probe while they are pending, and
`mailhop status` before/after. The DNS server's query log is sampled every
0.5 s to show what is really in flight.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Mailhop, Smtp, log, machine, make_tmp, rmtree,  # noqa
                    summary_ms)
from dnsserver import DNSServer  # noqa: E402  (tests/integration)
from smtpsink import Sink  # noqa: E402  (tests/integration)


def probe(port, sessions, noops, until=None, gap=0.05):
    """Up to `sessions` probe sessions, one after another, `gap` s apart,
    stopping at monotonic time `until` (if given)."""
    lat = {"connect_220": [], "ehlo": [], "noop": []}
    errors = []
    for i in range(sessions):
        if until is not None and time.monotonic() >= until:
            break
        if i:
            time.sleep(gap)
        try:
            t = time.monotonic()
            c = Smtp(port, 30)
            code, _ = c.reply()
            lat["connect_220"].append(time.monotonic() - t)
            t = time.monotonic()
            code2, _ = c.cmd(b"EHLO probe.measure.example")
            lat["ehlo"].append(time.monotonic() - t)
            for _ in range(noops):
                t = time.monotonic()
                code3, _ = c.cmd(b"NOOP")
                lat["noop"].append(time.monotonic() - t)
                if code3 != 250:
                    errors.append(f"NOOP {code3}")
            if code != 220 or code2 != 250:
                errors.append(f"greeting {code} EHLO {code2}")
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    return {k: summary_ms(v) for k, v in lat.items()}, errors


def inject(port, lo, hi, errs):
    try:
        c = Smtp(port, 60)
        c.reply()
        c.cmd(b"EHLO inject.measure.example")
        for i in range(lo, hi):
            for line, want in ((b"MAIL FROM:<src@measure.example>", 250),
                               (b"RCPT TO:<u@r%d.test>" % i, 250),
                               (b"DATA", 354),
                               (b"Subject: dns %d\r\n\r\nhello\r\n." % i,
                                250)):
                code, _ = c.cmd(line)
                if code != want:
                    errs.append(f"{i}: {line[:20]!r} -> {code}")
                    break
        c.close()
    except Exception as e:  # noqa: BLE001
        errs.append(repr(e))


def inject_one(port, rcpt, errs):
    try:
        c = Smtp(port, 60)
        c.reply()
        c.cmd(b"EHLO inject.measure.example")
        for line in (b"MAIL FROM:<src@measure.example>", b"RCPT TO:<" + rcpt
                     + b">", b"DATA", b"Subject: ok\r\n\r\nhello\r\n."):
            code, _ = c.cmd(line)
            if code >= 400:
                errs.append(f"{rcpt!r}: {line[:20]!r} -> {code}")
                break
        c.close()
    except Exception as e:  # noqa: BLE001
        errs.append(repr(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--probe-sessions", type=int, default=400)
    ap.add_argument("--baseline-s", type=float, default=8)
    ap.add_argument("--loaded-s", type=float, default=24,
                    help="probe until this long after injection began")
    ap.add_argument("--noops", type=int, default=50)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp, fs = make_tmp("mh-dns-", 1 << 30)
    res = {"machine": machine(), "lookups": a.lookups,
           "filesystem": fs.splitlines()[-1]}
    # ok.test is healthy: its MX points at a sink on loopback (smtp_port).
    sink = Sink()
    dns = DNSServer({"ok.test": [("MX", "10 mx.ok.test", 60)],
                     "mx.ok.test": [("A", "127.0.0.1", 60)]},
                    {f"r{i}.test": "drop" for i in range(a.lookups)})
    dns.start()
    mh = None
    timeline = []
    halt = threading.Event()
    try:
        mh = Mailhop(tmp, {"dns_servers": f"127.0.0.1:{dns.port}",
                           "dns_timeout": "10s",
                           "max_outbound": "1000",
                           "max_per_destination": "1000",
                           "retry_schedule": "1h",
                           "smtp_port": str(sink.port),
                           "outbound_tls": "none",
                           "max_sessions": "2000"})
        res["mailhop_cmd"] = " ".join(mh.cmd)
        time.sleep(0.5)
        # Healthy domain, idle server: time to delivery.
        tb = time.monotonic()
        e0 = []
        inject_one(mh.port, b"u@ok.test", e0)
        sink.wait(1, 30)
        res["ok_test_idle_delivery_s"] = round(time.monotonic() - tb, 3)
        res["baseline"], res["baseline_errors"] = probe(
            mh.port, a.probe_sessions, a.noops,
            until=time.monotonic() + a.baseline_s)
        res["status_idle"] = json.loads(mh.status())

        t0 = time.monotonic()

        def sample():
            while not halt.is_set():
                q = dns.queries()
                timeline.append((round(time.monotonic() - t0, 1), len(q),
                                 len({n for _, n, _ in q})))
                halt.wait(0.5)
        st = threading.Thread(target=sample, daemon=True)
        st.start()
        errs = []
        per = a.lookups // 10
        ths = [threading.Thread(target=inject, args=(mh.port, i * per,
               a.lookups if i == 9 else (i + 1) * per, errs))
               for i in range(10)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        res["inject_s"] = round(time.monotonic() - t0, 2)
        # One message to the healthy domain, behind the 1,000 in the FIFO.
        t_ok = time.monotonic()
        inject_one(mh.port, b"v@ok.test", errs)
        res["inject_errors"] = errs[:5]
        time.sleep(1.0)
        res["status_loaded_before"] = json.loads(mh.status())
        res["dns_queries_at_probe_start"] = len(dns.queries())
        tp = time.monotonic()
        res["loaded"], res["loaded_errors"] = probe(
            mh.port, a.probe_sessions, a.noops, until=t0 + a.loaded_s)
        res["loaded_probe_window_s"] = [round(tp - t0, 1),
                                        round(time.monotonic() - t0, 1)]
        res["dns_queries_at_probe_end"] = len(dns.queries())
        res["status_loaded_after"] = json.loads(mh.status())
        # Does the healthy domain's message get through while the dropped
        # lookups hold the 128 slots? Wait (bounded) and see.
        try:
            sink.wait(2, max(1.0, 30 - (time.monotonic() - t0)))
            res["ok_test_loaded_delivery_s"] = round(
                time.monotonic() - t_ok, 2)
        except AssertionError:
            res["ok_test_loaded_delivery_s"] = (
                f"not delivered after {time.monotonic() - t_ok:.0f} s")
        res["status_end"] = json.loads(mh.status())
        halt.set()
        st.join(2)
        res["dns_timeline"] = timeline
        ts = time.monotonic()
        res["mailhop_exit"] = mh.stop(30)
        res["shutdown_s"] = round(time.monotonic() - ts, 2)
    finally:
        halt.set()
        if mh and mh.proc.poll() is None:
            mh.stop()
        dns.stop()
        sink.stop()

    print(f"== dns: {a.lookups} messages to distinct dropped domains ==")
    print(f"injected in {res['inject_s']} s, errors {res['inject_errors']}")
    print(f"DNS queries received: {res['dns_queries_at_probe_start']} at "
          f"probe start, {res['dns_queries_at_probe_end']} at probe end "
          f"(probe window {res['loaded_probe_window_s']} s after injection "
          f"began)")
    print("timeline (s, queries, distinct names):",
          [x for i, x in enumerate(timeline) if i % 4 == 0])
    for phase in ("baseline", "loaded"):
        print(f"{phase:8s} " + "; ".join(
            f"{k} median {v['median_ms']} p99 {v['p99_ms']} max {v['max_ms']}"
            f" ms (n={v['n']})" for k, v in res[phase].items()),
            res[phase + "_errors"][:3])
    print(f"ok.test (healthy) message: delivered in "
          f"{res['ok_test_idle_delivery_s']} s when idle; behind the "
          f"{a.lookups}: {res['ok_test_loaded_delivery_s']}")
    for k in ("status_idle", "status_loaded_before", "status_loaded_after",
              "status_end"):
        print(k, json.dumps(res[k]))
    print(f"mailhop exit {res['mailhop_exit']} after SIGTERM in "
          f"{res['shutdown_s']} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if not a.keep:
        rmtree(tmp)
    else:
        print("kept", tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

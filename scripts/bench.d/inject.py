#!/usr/bin/python3
"""Paced SMTP injector for the latency profile of scripts/bench.

Opens SESSIONS connections, sends COUNT messages in total at RATE messages/s
(open loop: message i is due at start + i/RATE; a session that falls behind
sends at once; RATE 0: no pacing, as fast as the server answers), one
MAIL/RCPT/DATA transaction at a time per session, and measures for every
message the time from writing the final CRLF.CRLF to reading the complete 250
reply. Prints one JSON object on stdout.

Every message i carries the header "X-Bench-Id: i"; with --acked FILE the id
of every message that got its 250 is appended to FILE at once (line-buffered),
so the crash profile knows exactly which messages were acknowledged even if
the server is killed mid-run. With --starttls every session switches to TLS
after its first EHLO (the tls profile; the server's certificate is not
verified: the injector stands for the applications, not the peer under test).

Bounded: every read has a timeout and the whole run has a deadline.
"""
import argparse
import asyncio
import json
import ssl
import sys
import time


async def read_reply(reader, timeout):
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            break
    return int(lines[-1][:3]), b"".join(lines)


async def session(args, sid, nsess, start, lat, errors, acked):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.host, args.port), args.timeout)
    except Exception as e:  # noqa: BLE001 - report any failure
        errors.append(f"connect: {e}")
        return
    try:
        code, _ = await read_reply(reader, args.timeout)
        if code != 220:
            raise RuntimeError(f"greeting {code}")
        writer.write(b"EHLO inject.bench.example\r\n")
        code, _ = await read_reply(reader, args.timeout)
        if code != 250:
            raise RuntimeError(f"EHLO {code}")
        if args.starttls:
            writer.write(b"STARTTLS\r\n")
            code, _ = await read_reply(reader, args.timeout)
            if code != 220:
                raise RuntimeError(f"STARTTLS {code}")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            await asyncio.wait_for(writer.start_tls(ctx), args.timeout)
            writer.write(b"EHLO inject.bench.example\r\n")
            code, _ = await read_reply(reader, args.timeout)
            if code != 250:
                raise RuntimeError(f"EHLO after STARTTLS {code}")
        for i in range(sid, args.count, nsess):
            if args.rate > 0:
                due = start + i / args.rate
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
            writer.write(b"MAIL FROM:<a@bench.example>\r\n")
            code, _ = await read_reply(reader, args.timeout)
            if code != 250:
                raise RuntimeError(f"MAIL {code}")
            writer.write(b"RCPT TO:<b@example.net>\r\n")
            code, _ = await read_reply(reader, args.timeout)
            if code != 250:
                raise RuntimeError(f"RCPT {code}")
            writer.write(b"DATA\r\n")
            code, _ = await read_reply(reader, args.timeout)
            if code != 354:
                raise RuntimeError(f"DATA {code}")
            writer.write(make_body(args.size, i))
            await writer.drain()
            t0 = time.monotonic()
            writer.write(b".\r\n")
            code, _ = await read_reply(reader, args.timeout)
            t1 = time.monotonic()
            if code != 250:
                errors.append(f"end of data {code}")
                continue
            lat.append(t1 - t0)
            if acked:
                acked.write(f"{i}\n")
        writer.write(b"QUIT\r\n")
        try:
            await read_reply(reader, args.timeout)
        except Exception:  # noqa: BLE001 - QUIT reply is optional to us
            pass
    except Exception as e:  # noqa: BLE001
        errors.append(f"session {sid}: {e!r}")
    finally:
        writer.close()


def make_body(size, i):
    head = (b"From: a@bench.example\r\nTo: b@example.net\r\n"
            b"Subject: latency probe\r\nX-Bench-Id: %d\r\n\r\n" % i)
    line = b"x" * 76 + b"\r\n"
    n = max(1, (size - len(head)) // len(line))
    return head + line * n


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--deadline", type=float, default=120.0)
    p.add_argument("--acked", help="append the id of every 250'd message")
    p.add_argument("--starttls", action="store_true",
                   help="STARTTLS after EHLO in every session")
    args = p.parse_args()
    acked = open(args.acked, "a", buffering=1) if args.acked else None
    lat, errors = [], []
    start = time.monotonic() + (0.2 if args.rate > 0 else 0.0)
    tasks = [session(args, s, args.sessions, start, lat, errors, acked)
             for s in range(args.sessions)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.deadline)
    except asyncio.TimeoutError:
        errors.append("deadline reached")
    elapsed = time.monotonic() - start
    lat.sort()

    def pct(q):
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0

    json.dump({"ok": len(lat), "errors": len(errors),
               "first_errors": errors[:5], "elapsed": elapsed,
               "achieved_rate": len(lat) / elapsed if elapsed > 0 else 0,
               "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
               "max_ms": lat[-1] * 1000.0 if lat else None}, sys.stdout)
    print()


if __name__ == "__main__":
    asyncio.run(main())

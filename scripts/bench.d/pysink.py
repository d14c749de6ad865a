#!/usr/bin/python3
"""Small SMTP sink for the tempfail and crash profiles of scripts/bench.

Accepts mail on a loopback port, answers 451 to --tempfail PERCENT of RCPT
commands (chosen at random, seeded), and appends one line per event to --out:
"D <id>" for every message accepted (id = its X-Bench-Id header, "-" if
none), "T" for every recipient it tempfailed. Line-buffered, so a reader sees
every event at once. Understands EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT and pipelining (replies in order, one per command); with --cert and
--key also STARTTLS (the tls profile).
"""
import argparse
import asyncio
import random
import re
import ssl

ID_RE = re.compile(rb"^X-Bench-Id:\s*(\S+)", re.I | re.M)


async def handle(reader, writer, args, rng, out, tls):
    def send(s):
        writer.write(s.encode() + b"\r\n")
    send("220 pysink.bench ESMTP")
    rcpts = 0
    secure = False
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                starttls = b"250-STARTTLS\r\n" if tls and not secure else b""
                writer.write(b"250-pysink.bench\r\n250-PIPELINING\r\n" +
                             starttls +
                             b"250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif cmd == b"STAR" and tls and not secure:
                send("220 2.0.0 Ready to start TLS")
                await writer.drain()
                await writer.start_tls(tls)
                secure, rcpts = True, 0
                continue
            elif cmd == b"HELO":
                send("250 pysink.bench")
            elif cmd == b"MAIL":
                rcpts = 0
                send("250 2.1.0 Ok")
            elif cmd == b"RCPT":
                if rng.random() * 100.0 < args.tempfail:
                    out.write("T\n")
                    send("451 4.3.0 bench tempfail")
                else:
                    rcpts += 1
                    send("250 2.1.5 Ok")
            elif cmd == b"DATA":
                if not rcpts:
                    send("554 5.5.1 No valid recipients")
                    continue
                send("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                head, in_head, mid = [], True, b"-"
                while True:
                    l = await reader.readline()
                    if not l:
                        return
                    if l == b".\r\n" or l == b".\n":
                        break
                    if in_head:
                        if l in (b"\r\n", b"\n"):
                            in_head = False
                        else:
                            head.append(l)
                m = ID_RE.search(b"".join(head))
                if m:
                    mid = m.group(1)
                out.write("D " + mid.decode(errors="replace") + "\n")
                rcpts = 0
                send("250 2.0.0 Ok: queued")
            elif cmd == b"RSET":
                rcpts = 0
                send("250 2.0.0 Ok")
            elif cmd == b"NOOP":
                send("250 2.0.0 Ok")
            elif cmd == b"QUIT":
                send("221 2.0.0 Bye")
                await writer.drain()
                break
            else:
                send("502 5.5.2 Error: command not recognized")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tempfail", type=float, default=0.0,
                   help="percent of RCPT answered 451")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--cert", help="offer STARTTLS with this certificate")
    p.add_argument("--key")
    args = p.parse_args()
    rng = random.Random(args.seed)
    out = open(args.out, "a", buffering=1)
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    srv = await asyncio.start_server(
        lambda r, w: handle(r, w, args, rng, out, tls), "127.0.0.1",
        args.port, backlog=1000)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

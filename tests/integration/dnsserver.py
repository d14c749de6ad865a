#!/usr/bin/python3
"""A loopback DNS server for tests, on python3-dnslib.

Importable (pytest fixtures in other files) or runnable as a script:

    dnsserver.py --port 0 --records zone.json     # prints "PORT <n>" then serves

Records are {name: [(type, value, ttl), ...]}: type is A, AAAA, MX ("10
mx1.a.test"), CNAME, TXT.  A name absent from the records is NXDOMAIN; a
name present without records of the asked type is NODATA (NOERROR with an
SOA in the authority section whose MINIMUM is `negative_ttl`).  CNAMEs are
followed inside the server like a recursive resolver does (set
follow_cname=False to answer with the CNAME alone).

Per-name behaviours (`behaviours={name: what}`, or in the JSON under the key
"_behaviours"):
  servfail, refused   the rcode
  drop                never answer (the client times out)
  truncate            over UDP an empty answer with TC set; over TCP the
                      full answer
  wrong_id            first a bogus answer (127.0.0.66 / a bogus MX) with
                      the wrong ID, then after `spoof_delay` the real one
  wrong_addr          the same bogus answer with the right ID but sent from
                      another socket (another source port), then the real one

Every query is logged in `log` as (proto, name, type) with name lower-cased
and without the final dot.  Records and behaviours can be changed while it
runs (set_records, set_behaviour).  Binds 127.0.0.1 only.
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time

from dnslib import (AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A,
                    DNSRecord)

_RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT}


def _norm(name):
    return str(name).rstrip(".").lower()


def _rdata(rtype, value):
    if rtype == "MX":
        pref, host = str(value).split(None, 1)
        return MX(host, int(pref))
    return _RDATA[rtype](value)


class DNSServer:
    def __init__(self, records=None, behaviours=None, port=0, host="127.0.0.1",
                 negative_ttl=60, follow_cname=True, spoof_delay=0.2):
        self.records = {}
        self.behaviours = {}
        self.negative_ttl = negative_ttl
        self.follow_cname = follow_cname
        self.spoof_delay = spoof_delay
        self.log = []
        self.lock = threading.Lock()
        self.set_records(records or {})
        for n, b in (behaviours or {}).items():
            self.set_behaviour(n, b)
        self.host = host
        # UDP and TCP on the same port: with port 0 the kernel's UDP choice
        # may be taken for TCP (by some connection), so try a few.
        for attempt in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((host, port))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
                if port != 0 or attempt == 49:
                    raise
        self.tcp.listen(64)
        self.spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.spoof.bind((host, 0))
        self._stop = False
        self._threads = []

    # -- configuration ----------------------------------------------------
    def set_records(self, records):
        with self.lock:
            self.records = {_norm(k): [tuple(r) for r in v]
                            for k, v in records.items()}

    def set_behaviour(self, name, what):
        with self.lock:
            if what is None:
                self.behaviours.pop(_norm(name), None)
            else:
                self.behaviours[_norm(name)] = what

    def queries(self, name=None, qtype=None):
        with self.lock:
            return [q for q in self.log
                    if (name is None or q[1] == _norm(name))
                    and (qtype is None or q[2] == qtype)]

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # -- answering ----------------------------------------------------------
    def _soa(self, name):
        zone = name.split(".")[-1] if "." in name else name
        return RR(zone + ".", QTYPE.SOA, ttl=self.negative_ttl,
                  rdata=SOA("ns." + zone + ".", "hostmaster." + zone + ".",
                            (1, 3600, 600, 86400, self.negative_ttl)))

    def answer(self, req, tcp):
        """Builds the reply to req, or None to stay silent."""
        q = req.q
        name = _norm(q.qname)
        qtype = QTYPE[q.qtype]
        with self.lock:
            self.log.append(("tcp" if tcp else "udp", name, qtype))
            behaviour = self.behaviours.get(name)
            records = dict(self.records)
        reply = req.reply()
        if behaviour == "drop":
            return None
        if behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if behaviour == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply
        if behaviour == "truncate" and not tcp:
            reply.header.tc = 1
            return reply
        cur = name
        for _ in range(10):
            if cur not in records:
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(self._soa(cur))
                return reply
            rrs = records[cur]
            wanted = [r for r in rrs if r[0] == qtype]
            cname = [r for r in rrs if r[0] == "CNAME"]
            if wanted or not cname or qtype == "CNAME":
                for rtype, value, ttl in wanted:
                    reply.add_answer(RR(cur + ".", getattr(QTYPE, rtype),
                                        ttl=int(ttl), rdata=_rdata(rtype, value)))
                if not wanted:
                    reply.add_auth(self._soa(cur))
                return reply
            rtype, value, ttl = cname[0]
            reply.add_answer(RR(cur + ".", QTYPE.CNAME, ttl=int(ttl),
                                rdata=CNAME(value)))
            if not self.follow_cname:
                return reply
            cur = _norm(value)
        return reply

    def _bogus(self, req):
        reply = req.reply()
        qtype = QTYPE[req.q.qtype]
        if qtype == "MX":
            reply.add_answer(RR(req.q.qname, QTYPE.MX, ttl=300,
                                rdata=MX("evil.spoof.test", 1)))
        elif qtype == "AAAA":
            reply.add_answer(RR(req.q.qname, QTYPE.AAAA, ttl=300,
                                rdata=AAAA("::66")))
        else:
            reply.add_answer(RR(req.q.qname, QTYPE.A, ttl=300,
                                rdata=A("127.0.0.66")))
        return reply

    def _serve_udp(self):
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            try:
                req = DNSRecord.parse(data)
            except Exception:
                continue
            reply = self.answer(req, tcp=False)
            if reply is None:
                continue
            behaviour = self.behaviours.get(_norm(req.q.qname))
            if behaviour in ("wrong_id", "wrong_addr"):
                bogus = self._bogus(req)
                if behaviour == "wrong_id":
                    bogus.header.id = (req.header.id + 1) & 0xFFFF
                    self.udp.sendto(bogus.pack(), peer)
                else:
                    self.spoof.sendto(bogus.pack(), peer)
                threading.Timer(self.spoof_delay, self._send_late,
                                (reply.pack(), peer)).start()
                continue
            self.udp.sendto(reply.pack(), peer)

    def _send_late(self, data, peer):
        try:
            self.udp.sendto(data, peer)
        except OSError:
            pass

    def _serve_tcp_conn(self, conn):
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    hdr = self._recv_exact(conn, 2)
                    if not hdr:
                        return
                    data = self._recv_exact(conn, struct.unpack("!H", hdr)[0])
                    if data is None:
                        return
                    reply = self.answer(DNSRecord.parse(data), tcp=True)
                    if reply is None:
                        continue
                    out = reply.pack()
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except (OSError, Exception):
                return

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve_tcp(self):
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve_tcp_conn, args=(conn,),
                                 daemon=True)
            t.start()

    def start(self):
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop = True
        for s in (self.udp, self.tcp, self.spoof):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--records", help="JSON file {name: [[type, value, ttl]]}")
    ap.add_argument("--negative-ttl", type=int, default=60)
    args = ap.parse_args(argv)
    records, behaviours = {}, {}
    if args.records:
        with open(args.records) as f:
            records = json.load(f)
        behaviours = records.pop("_behaviours", {})
    srv = DNSServer(records, behaviours, port=args.port,
                    negative_ttl=args.negative_ttl).start()
    print("PORT %d" % srv.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A mail loop through a port forward (issue 12, item 4; CONTRACT §4).

The MX of the recipient domain resolves (loopback DNS server) to an address
that is not one of mailhop's listeners, but a tiny TCP forwarder there (the
"docker-proxy" of a NAT'ed container) hands every connection back to
mailhop itself.  The address check cannot see that; the greeting naming
this relay's `hostname` can: one bounce 5.4.6 at once, not 50 hops until
the Received limit."""
import email
import smtplib
import socket
import threading
import time

import pytest

from conftest import free_port, rows
from dnsserver import DNSServer
from smtpsink import Sink


class Forwarder:
    """Accepts on (host, port) and pipes each connection to target."""

    def __init__(self, host, port, target):
        self.target = target
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.stopping = False
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.sock.close()
        for s in self.open:
            try:
                s.close()
            except OSError:
                pass


def wait(fn, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def looped(mailhop):
    port = free_port()
    dns = DNSServer({"loop.test": [("MX", "10 mx.loop.test", 60)],
                     "mx.loop.test": [("A", "127.0.0.2", 60)],
                     "src.test": [("A", "127.0.0.3", 60)]}, port=0)
    dns.start()
    home = Sink(host="127.0.0.3", port=port)
    m = mailhop(start=False, hostname="mailhop.test",
                dns_servers=f"127.0.0.1:{dns.port}", smtp_port=port,
                outbound_tls="none", retry_schedule="1s")
    fwd = Forwarder("127.0.0.2", port, ("127.0.0.1", m.port))
    m.start()
    yield m, fwd, home
    m.kill()
    fwd.stop()
    home.stop()
    dns.stop()


def test_port_forward_back_to_itself_bounces_once(looped):
    m, fwd, home = looped
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    s.sendmail("alice@src.test", ["bob@loop.test"],
               "Subject: loop\r\nX-Mark: 7\r\n\r\nbody\r\n")
    s.quit()
    (dsn,) = home.wait(1)
    assert dsn.sender == "" and dsn.addresses == ["alice@src.test"]
    msg = email.message_from_bytes(dsn.data)
    report = [p for p in msg.walk()
              if p.get_content_type() == "message/delivery-status"]
    assert report, dsn.data
    text = report[0].as_string()
    assert "Status: 5.4.6" in text
    assert "loops back to myself" in text
    wait(lambda: rows(m, "select count(*) from messages")[0][0] == 0,
         what="queue empty")
    # One hop through the forward: the original was accepted once, and the
    # relay never handed it to itself (no second `accepted`).
    assert fwd.connections == 1
    assert m.log().count("event=accepted") == 1, m.log()
    assert "event=bounced" in m.log() and "dsn=5.4.6" in m.log()
    # Nothing else reaches the bounce sink later (no 50-hop loop going on).
    time.sleep(1.5)
    assert len(home.messages) == 1
    assert fwd.connections == 1


def test_relayhost_forwarding_back_defers_not_bounces(mailhop):
    # The same loop through the relayhost setting is a configuration
    # problem: the mail waits (CONTRACT §4: a broken relayhost setting
    # never bounces the queue), and nothing goes round.
    port = free_port()
    m = mailhop(start=False, hostname="mailhop.test",
                relayhost=f"[127.0.0.2]:{port}", relayhost_tls="none",
                retry_schedule="1h")
    fwd = Forwarder("127.0.0.2", port, ("127.0.0.1", m.port))
    try:
        m.start()
        s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
        s.sendmail("alice@src.test", ["bob@loop.test"],
                   "Subject: loop\r\n\r\nbody\r\n")
        s.quit()
        m.wait_log("event=deferred")
        assert "dsn=4.4.6" in m.log() and "loops back to myself" in m.log()
        assert "event=bounced" not in m.log()
        assert m.log().count("event=accepted") == 1
        assert fwd.connections == 1
        assert rows(m, "select count(*) from messages")[0][0] == 1
    finally:
        m.kill()
        fwd.stop()

"""Outbound fixes (issues 12 and 14) against the real binary: a deleted
message never bounces, a relayhost refusing this relay defers, a 535 is
logged with the code it gave, RET=FULL bounces stay bounded, and the
connection limits count idle connections."""
import threading
import time

from conftest import free_port, rows
from smtpsink import Sink
from test_delivery import (bounce_dns, net, parse_dsn, queue_empty,  # noqa: F401
                           recipients, send, wait)


def test_delete_during_delivery_never_bounces(net):
    net.records(bounce_dns())
    entered = threading.Event()
    release = threading.Event()

    def rcpt(addr, n):
        entered.set()
        release.wait(20)
        return "550 5.1.1 <%s>: user unknown" % addr

    net.sink("127.0.0.7", rcpt_reply=rcpt)
    home = net.sink("127.0.0.8")
    m = net.relay(hostname="relay.test")
    send(m, "alice@src.test", ["nobody@b.test"])
    assert entered.wait(20), "the delivery never reached RCPT"
    (mid,) = [r[0] for r in rows(m, "select id from messages")]
    r = m.cli("queue", "delete", mid)
    assert r.returncode == 0, r.stderr
    release.set()
    # The refusal arrives after the delete: no bounce is queued or sent.
    time.sleep(2)
    assert rows(m, "select count(*) from messages")[0][0] == 0
    assert home.messages == []
    assert "event=bounced" not in m.log()

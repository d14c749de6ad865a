"""Body lines over 998 octets on the way out (issue 12, item 7; CONTRACT §3):
broken with CRLF SP as Postfix does (smtp_line_length_limit), so the next
hop gets no line over 998 octets and base64 survives; the relay logs it
once per message.  A message whose lines fit goes out unchanged."""
import base64
import binascii
import email
import smtplib

from test_delivery import net, queue_empty, wait  # noqa: F401


def send(m, body):
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    s.sendmail("a@src.test", ["x@f.test"], body)
    s.quit()


def test_long_body_lines_broken_with_crlf_sp(net):
    net.records({"f.test": [("A", "127.0.0.9", 60)]})
    sink = net.sink("127.0.0.9")
    m = net.relay()
    payload = bytes(range(256)) * 12
    b64line = base64.b64encode(payload).decode()  # 4096 octets, one line
    dotted = "." + "d" * 2999  # starts with a dot, over 998
    body = ("Subject: long\r\nMIME-Version: 1.0\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            + b64line + "\r\n" + dotted + "\r\nend\r\n")
    send(m, body)
    (msg,) = sink.wait(1)
    lines = msg.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    # Postfix's break: CRLF SP, the SP counted in the 998.
    text = msg.data.decode()
    assert b64line[:998] + "\r\n " + b64line[998:998 + 997] + "\r\n " in text
    assert dotted[:998] + "\r\n " + dotted[998:1995] + "\r\n " in text
    # The SP is whitespace a base64 decoder skips: the content survives.
    encoded = text.split("\r\n\r\n", 1)[1].split("\r\n.")[0]
    assert " " in encoded
    assert binascii.a2b_base64(encoded.encode()) == payload
    assert email.message_from_bytes(msg.data)["Subject"] == "long"
    assert text.endswith("\r\nend\r\n")
    wait(lambda: queue_empty(m))
    assert m.log().count("event=folded") == 1, m.log()

    # Lines that fit: sent as they were, nothing logged.
    ok = "Subject: fits\r\n\r\n" + "q" * 998 + "\r\n"
    send(m, ok)
    (_, second) = sink.wait(2)
    assert second.data.endswith(("q" * 998 + "\r\n").encode())
    assert b"\r\n " not in second.data.split(b"\r\n\r\n", 1)[1]
    wait(lambda: queue_empty(m))
    assert m.log().count("event=folded") == 1

"""Outbound TLS reports the truth (issue 12, item 7).

- Opportunistic TLS verifies against `tls_ca_file` without enforcing it: a
  server whose certificate the anchors vouch for is logged `verified=1`.
- A failed opportunistic handshake is logged with its real cause (the
  alert the server sent), not as `certificate verify failed: unable to get
  local issuer certificate` because the unenforced check had failed too.

Certificates are made at test time (test_tls.py's PKI: a test CA, a server
certificate for mx.test / relay.test / 127.0.0.1)."""
import socket
import ssl
import threading

from test_tls import (dns, finish, mx_sink, pki, submit,  # noqa: F401
                      wait_until)


def mx_test_conf(port, dnsrv, **kw):
    """b.test's MX is mx.test, the name the test CA's server cert holds."""
    dnsrv.set_records({"b.test": [("MX", "10 mx.test", 60)],
                       "mx.test": [("A", "127.0.0.1", 60)]})
    conf = {"smtp_port": port, "dns_servers": dnsrv.address,
            "outbound_tls": "opportunistic", "retry_schedule": "1h"}
    conf.update(kw)
    return conf


def tls_lines(m):
    return [line for line in m.log().splitlines()
            if "event=tls" in line and "direction=outbound" in line]


def test_opportunistic_verified_against_tls_ca_file(mailhop, pki, dns):
    sh = mx_sink(pki, cert="server")
    try:
        m = mailhop(**mx_test_conf(sh.port, dns, tls_ca_file=pki.ca))
        submit(m, "bob@b.test")
        wait_until(lambda: sh.messages)
        assert sh.messages[0][1], "not delivered over TLS"
        m.wait_log("event=delivered")
        (line,) = tls_lines(m)
        assert "verified=1" in line, line
        finish(m)
    finally:
        sh.controller.stop()


def test_opportunistic_untrusted_still_delivers_unverified(mailhop, pki, dns):
    sh = mx_sink(pki, cert="untrusted")
    try:
        m = mailhop(**mx_test_conf(sh.port, dns, tls_ca_file=pki.ca))
        submit(m, "bob@b.test")
        wait_until(lambda: sh.messages)
        assert sh.messages[0][1], "not delivered over TLS"
        m.wait_log("event=delivered")
        (line,) = tls_lines(m)
        assert "verified=0" in line, line
        finish(m)
    finally:
        sh.controller.stop()


class AlertingServer:
    """A minimal SMTP server on a blocking socket whose STARTTLS handshake
    demands a client certificate (TLS 1.2): OpenSSL writes its alert to
    the socket before the server closes, as a real MTA's would.  Sessions
    that do not ask for STARTTLS get their message accepted."""

    def __init__(self, pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.path("server.crt"),
                                 pki.path("server.key"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(pki.ca)
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.messages = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 mx.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-mx.test\r\n250 STARTTLS\r\n")
                elif line.upper().startswith(b"STARTTLS"):
                    conn.sendall(b"220 2.0.0 go ahead\r\n")
                    try:
                        self.ctx.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        pass
                    return
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        data += chunk
                    self.messages.append(data)
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        finally:
            conn.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_failed_handshake_logs_the_real_alert(mailhop, pki, dns):
    # The server wants a client certificate and mailhop cannot verify the
    # server's certificate (no tls_ca_file): the handshake ends with the
    # server's alert, and that is what the log says, not the unenforced
    # certificate check.  The plaintext retry then delivers.
    srv = AlertingServer(pki)
    try:
        m = mailhop(**mx_test_conf(srv.port, dns))
        submit(m, "bob@b.test")
        wait_until(lambda: srv.messages)
        m.wait_log("event=delivered")
        failed = [line for line in tls_lines(m) if "error=" in line]
        assert failed, m.log()
        assert "alert handshake failure" in failed[0], failed[0]
        assert "certificate verify failed" not in failed[0], failed[0]
        finish(m)
    finally:
        srv.stop()

"""A scriptable SMTP server for the delivery tests (loopback only).

Each connection is served by a thread.  Replies can be scripted per
server: the greeting, the reply to each RCPT (a function of the address
and the count of recipients accepted in the transaction so far), the reply
to end of data, and whether AUTH is required.  Every message is recorded
with its envelope, DSN parameters and data; every transaction is counted.
"""
import base64
import socket
import threading
import time


class Message:
    def __init__(self, sender, mail_params, rcpts, data, peer):
        self.sender = sender
        self.mail_params = mail_params
        self.rcpts = rcpts  # [(address, params)]
        self.data = data
        self.peer = peer

    @property
    def addresses(self):
        return [a for a, _ in self.rcpts]


class Sink:
    def __init__(self, host="127.0.0.1", port=0, greeting="220 sink.test ESMTP",
                 rcpt_reply=None, data_reply=None, auth=None, dsn=True,
                 data_delay=0.0, extensions=None, drop_in_data=0,
                 mail_reply=None):
        self.host = host
        self.greeting = greeting
        self.rcpt_reply = rcpt_reply or (lambda addr, n: "250 2.1.5 Ok")
        self.data_reply = data_reply or (lambda msg: "250 2.0.0 Ok: queued")
        self.mail_reply = mail_reply or (lambda sender: "250 2.1.0 Ok")
        self.auth = auth  # (user, password) required, or None
        self.dsn = dsn
        self.data_delay = data_delay
        self.extensions = extensions
        # Hang up in the middle of this many messages' data (fault test).
        self.drop_in_data = drop_in_data
        self.messages = []
        self.transactions = 0
        self.connections = 0
        self.auth_seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.running = False
        try:
            # shutdown() wakes the thread blocked in accept(); close()
            # alone would leave the port bound until it returns.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def wait(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(
            f"sink {self.host}:{self.port} got {len(self.messages)} of "
            f"{count} messages")

    def _accept(self):
        while self.running:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, peer),
                             daemon=True).start()

    def _serve(self, conn, peer):
        f = conn.makefile("rwb", buffering=0)
        conn.settimeout(30)

        def send(line):
            conn.sendall(line.encode() + b"\r\n")

        try:
            send(self.greeting)
            if not self.greeting.startswith("2"):
                f.readline()
                return
            sender = None
            params = ""
            rcpts = []
            authed = self.auth is None
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").rstrip("\r\n")
                verb = cmd.split(" ")[0].upper()
                if verb == "EHLO":
                    ext = self.extensions
                    if ext is None:
                        ext = ["PIPELINING", "8BITMIME", "SIZE 100000000",
                               "ENHANCEDSTATUSCODES", "SMTPUTF8"]
                        if self.dsn:
                            ext.append("DSN")
                        if self.auth:
                            ext.append("AUTH PLAIN LOGIN")
                    lines = ["sink.test"] + ext
                    for l in lines[:-1]:
                        send("250-" + l)
                    send("250 " + lines[-1])
                elif verb == "HELO":
                    send("250 sink.test")
                elif verb == "AUTH":
                    parts = cmd.split(" ")
                    if len(parts) >= 3 and parts[1].upper() == "PLAIN":
                        raw = base64.b64decode(parts[2]).split(b"\0")
                        user, pw = raw[1].decode(), raw[2].decode()
                        self.auth_seen.append((user, pw))
                        if self.auth and (user, pw) == tuple(self.auth):
                            authed = True
                            send("235 2.7.0 Authentication successful")
                        else:
                            send("535 5.7.8 Authentication failed")
                    else:
                        send("504 5.5.4 Unrecognized authentication type")
                elif verb == "MAIL":
                    if not authed:
                        send("530 5.7.0 Authentication required")
                        continue
                    rest = cmd[10:]
                    sender = rest[rest.index("<") + 1:rest.index(">")]
                    params = rest[rest.index(">") + 1:].strip()
                    rcpts = []
                    reply = self.mail_reply(sender)
                    if not reply.startswith("2"):
                        sender = None
                    send(reply)
                elif verb == "RCPT":
                    rest = cmd[8:]
                    addr = rest[rest.index("<") + 1:rest.index(">")]
                    rp = rest[rest.index(">") + 1:].strip()
                    reply = self.rcpt_reply(addr, len(rcpts))
                    if reply.startswith("2"):
                        rcpts.append((addr, rp))
                    send(reply)
                elif verb == "DATA":
                    if not rcpts:
                        send("554 5.5.1 Error: no valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    with self.lock:
                        drop = self.drop_in_data > 0
                        if drop:
                            self.drop_in_data -= 1
                    if drop:
                        f.readline()
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    data = b""
                    while True:
                        l = f.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        if l.startswith(b".."):
                            l = l[1:]
                        data += l
                    if self.data_delay:
                        time.sleep(self.data_delay)
                    msg = Message(sender, params, rcpts, data, peer)
                    reply = self.data_reply(msg)
                    if reply.startswith("2"):
                        with self.lock:
                            self.messages.append(msg)
                            self.transactions += 1
                    send(reply)
                elif verb == "RSET":
                    rcpts = []
                    send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except (OSError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

"""Fixtures for the integration tests: the real mailhop binary, run on
loopback with its own temp dir, ports, DNS server and SMTP sinks."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MAILHOP_BIN", str(ROOT / "build" / "mailhop"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ports import free_port  # noqa: E402,F401  (the tests import it from here)


@pytest.fixture(autouse=True)
def _binary_exists():
    """Every test needs the binary: a missing one fails each test (it is
    never a reason to skip)."""
    assert os.path.isfile(BIN) and os.access(BIN, os.X_OK), \
        f"no mailhop binary at {BIN} (set MAILHOP_BIN or build it)"


def clean_env(extra=None):
    """The environment without any MAILHOP_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILHOP_")}
    env.update(extra or {})
    return env


def run(*args, env=None, timeout=30, cwd=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          env=clean_env(env), timeout=timeout, cwd=cwd)


class Mailhop:
    """One `mailhop serve` process with a config file in its own dir."""

    def __init__(self, workdir: Path, **overrides):
        self.dir = workdir
        self.port = free_port()
        self.conf = {
            "listen": f"127.0.0.1:{self.port}",
            "hostname": "mailhop.test",
            "queue_path": str(workdir / "queue.db"),
            "admin_socket": str(workdir / "admin.sock"),
            "dns_servers": "127.0.0.1:9",  # nothing leaks out by default
            "smtp_timeout": "30s",
            "shutdown_timeout": "3s",
        }
        self.conf.update({k: str(v) for k, v in overrides.items()})
        self.proc = None
        self.log_path = workdir / "mailhop.log"
        self.env = None

    def write_conf(self):
        path = self.dir / "mailhop.conf"
        path.write_text("".join(f"{k} = {v}\n" for k, v in self.conf.items()))
        return path

    def start(self, wait=True, env=None):
        path = self.write_conf()
        self.log_offset = len(self.log_all())
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "-c", str(path)],
                                     stdout=self.logf, stderr=self.logf,
                                     env=clean_env(env or self.env),
                                     cwd=self.dir)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mailhop exited {self.proc.returncode}:\n{self.log()}")
            if "event=listening" in self.log() or '"listening"' in self.log():
                return
            time.sleep(0.05)
        raise AssertionError(f"mailhop did not start:\n{self.log()}")

    def log_all(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self):
        """The log of the current (last started) process."""
        return self.log_all()[getattr(self, "log_offset", 0):]

    def wait_log(self, needle, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.log():
                return True
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in log:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"mailhop did not stop:\n{self.log()}")
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def cli(self, *args, timeout=30):
        return run(*args, "-s", self.conf["admin_socket"], timeout=timeout)

    def db(self):
        import sqlite3
        return sqlite3.connect(self.conf["queue_path"])


@pytest.fixture
def mailhop(tmp_path):
    """A factory: mailhop(**config) -> started Mailhop; all stopped at end."""
    started = []

    def make(start=True, **overrides):
        m = Mailhop(tmp_path, **overrides)
        started.append(m)
        if start:
            m.start()
        return m

    yield make
    for m in started:
        m.kill()


class Raw:
    """A raw SMTP client: exact bytes out, whole replies in."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def reply(self):
        """One reply: (code, text of all lines joined by newlines)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; got {lines!r} "
                                   f"{self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode(errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closed the connection (EOF) in time."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def rows(m, sql, *args):
    with m.db() as db:
        return db.execute(sql, args).fetchall()

"""Shared helpers for scripts/measure.d/*: ports, mailhop start/stop, /proc
sampling, a small blocking SMTP client, percentiles, machine facts.

Loopback only. Every wait has a deadline; only processes started here are
stopped, by PID.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAILHOP = os.path.join(ROOT, "build", "mailhop")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from ports import free_port  # noqa: E402,F401  (outside the ephemeral range)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_banner(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0) as s:
                s.settimeout(2.0)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def stop_proc(proc, timeout=15.0):
    """SIGTERM one process we started, SIGKILL after timeout. Returns rc."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def machine():
    free = subprocess.run(["free", "-h"], capture_output=True, text=True,
                          timeout=10).stdout.strip()
    return {"nproc": os.cpu_count(), "free_h": free,
            "kernel": os.uname().release}


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """VmRSS and VmHWM of one pid every `interval` seconds."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []  # (t monotonic, rss KiB, hwm KiB)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.samples.append((time.monotonic(),
                                 status_kib(self.pid, "VmRSS"),
                                 status_kib(self.pid, "VmHWM")))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(5)

    def peak_rss(self, t0=None, t1=None):
        v = [s[1] for s in self.samples
             if (t0 is None or s[0] >= t0) and (t1 is None or s[0] <= t1)]
        return max(v) if v else 0


class Mailhop:
    """build/mailhop serve on a loopback high port, its queue and admin
    socket in tmp. stderr goes to tmp/mailhop.log. `wrap` prefixes the
    command (e.g. strace)."""

    def __init__(self, tmp, opts, wrap=None, name="mailhop"):
        self.tmp = tmp
        self.port = free_port()
        self.sock = os.path.join(tmp, "a.sock")
        self.db = os.path.join(tmp, "q.db")
        base = {"listen": f"127.0.0.1:{self.port}",
                "queue_path": self.db,
                "admin_socket": self.sock,
                "hostname": "measure.example"}
        base.update(opts)
        self.cmd = [MAILHOP, "serve"]
        for k, v in base.items():
            self.cmd += ["-o", f"{k}={v}"]
        self.logpath = os.path.join(tmp, name + ".log")
        self.errf = open(self.logpath, "wb")
        self.proc = subprocess.Popen((wrap or []) + self.cmd,
                                     stdout=self.errf, stderr=self.errf,
                                     stdin=subprocess.DEVNULL)
        if not wait_banner(self.port, 30):
            self.stop()
            raise RuntimeError("mailhop did not start; see " + self.logpath)
        self.t_ready_wall = time.time()
        self.pid = self.proc.pid if not wrap else self._child_of(self.proc.pid)

    @staticmethod
    def _child_of(ppid):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{ppid}/task/{ppid}/children") as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("no child under the wrapper")

    def status(self):
        r = subprocess.run([MAILHOP, "status", "-s", self.sock, "--json"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip() or r.stderr.strip()

    def stop(self, timeout=20.0):
        if self.pid != self.proc.pid and self.proc.poll() is None:
            # Wrapped (strace): SIGTERM mailhop itself, the wrapper follows.
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        rc = stop_proc(self.proc, timeout)
        self.errf.close()
        return rc


def sqlite_rows(db, sql):
    r = subprocess.run(["sqlite3", "-readonly", db, sql], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("sqlite3: " + r.stderr)
    return [line.split("|") for line in r.stdout.strip().splitlines()]


class Smtp:
    """Minimal blocking SMTP client that times each reply."""

    def __init__(self, port, timeout=60.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout)
        self.s.settimeout(timeout)
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise ConnectionError("closed by server")
                self.buf += d
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)

    def cmd(self, line):
        self.s.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.s.sendall(b"QUIT\r\n")
            self.reply()
        except OSError:
            pass
        self.s.close()


def pct(vals, p):
    if not vals:
        return float("nan")
    v = sorted(vals)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def summary_ms(vals):
    """median, p99, max in ms of a list of seconds."""
    if not vals:
        return {"n": 0}
    return {"n": len(vals),
            "median_ms": round(statistics.median(vals) * 1000, 3),
            "p99_ms": round(pct(vals, 99) * 1000, 3),
            "max_ms": round(max(vals) * 1000, 3)}


def make_tmp(prefix, need_bytes):
    """A temp dir under TMPDIR (default /tmp) with need_bytes free, else
    under ROOT/build-measure."""
    for base in (os.environ.get("TMPDIR", "/tmp"),
                 os.path.join(ROOT, "build-measure")):
        os.makedirs(base, exist_ok=True)
        st = os.statvfs(base)
        free = st.f_bavail * st.f_frsize
        if free >= need_bytes:
            import tempfile
            d = tempfile.mkdtemp(prefix=prefix, dir=base)
            fs = subprocess.run(["df", "-T", d], capture_output=True,
                                text=True, timeout=10).stdout.strip()
            log(f"temp dir {d}: {free / 2**30:.1f} GiB free "
                f"(need {need_bytes / 2**30:.1f})")
            return d, fs
    raise RuntimeError(f"no dir with {need_bytes / 2**30:.1f} GiB free")


def rmtree(d):
    shutil.rmtree(d, ignore_errors=True)

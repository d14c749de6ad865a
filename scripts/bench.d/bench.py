#!/usr/bin/python3
"""mailhop vs Postfix, side by side, in one run. Driven by scripts/bench.

Every round starts a fresh server (mailhop, or a private Postfix instance in a
temp dir) and a fresh smtp-sink on loopback high ports, runs one load, and
stops exactly the processes it started (by PID). Rounds alternate
mailhop, postfix, mailhop, postfix... Every measured run of the comparing
profiles follows a warm-up load on the same fresh server. Results: median
[min..max] per server and the ratio mailhop/Postfix (none where the figure
is not comparable). The table header names the commit and the date.
"""
import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAILHOP = os.path.join(ROOT, "build", "mailhop")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0
VERBOSE = False


# Process and port helpers shared with scripts/measure.
sys.path.insert(0, os.path.join(ROOT, "scripts", "measure.d"))
from common import free_port, log, status_kib, wait_banner  # noqa: E402
from common import stop_proc as stop_pid  # noqa: E402


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    ppid = int(rest[1])
    own = (int(rest[11]) + int(rest[12])) / HZ
    children = (int(rest[13]) + int(rest[14])) / HZ
    return ppid, own, children


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    """root and every live descendant of it."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st:
            kids.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_cpu(root):
    """CPU seconds used so far by root and all its descendants, reaped
    ones included (they are in root's cutime/cstime)."""
    total = 0.0
    for p in descendants(root):
        st = proc_stat(p)
        if st:
            total += st[1]
            if p == root:
                total += st[2]
    return total


class Sampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree; keeps the peaks."""

    def __init__(self, root, interval):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            pids = descendants(self.root)
            rss = sum(status_kib(p, "VmRSS") for p in pids)
            pss = sum(pss_kib(p) for p in pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(5)


def task_cpu_ns(pid):
    """CPU time of every thread of pid so far, in ns (per-thread
    /proc/PID/task/TID/schedstat: finer than the 10 ms clock ticks of
    /proc/PID/stat, for short measurements). 0 if the process is gone."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


# ---------------------------------------------------------------- sink

class Sink:
    """smtp-sink on a loopback port, counting delivered messages."""

    def __init__(self, tmp, backlog=1000, port=None):
        self.port = port or free_port()
        self.out = os.path.join(tmp, "sink.out")
        cmd = [SMTP_SINK, "-c"]
        if IS_ROOT:
            cmd += ["-u", "nobody"]
        cmd += [f"127.0.0.1:{self.port}", str(backlog)]
        self.f = open(self.out, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.f,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if not wait_banner(self.port, 10):
            self.stop()
            raise RuntimeError("smtp-sink did not start")

    def count(self):
        with open(self.out, "rb") as f:
            try:
                f.seek(-200, os.SEEK_END)
            except OSError:
                f.seek(0)
            m = re.findall(rb"mesg=(\d+)", f.read())
        return int(m[-1]) if m else 0

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return time.monotonic()
            time.sleep(0.01)
        return None

    def stop(self):
        stop_pid(self.proc)
        self.f.close()


class PySink:
    """scripts/bench.d/pysink.py: knows each message's X-Bench-Id, can
    tempfail a percentage of recipients."""

    def __init__(self, tmp, tempfail=0.0, port=None, tls=None):
        self.port = port or free_port()
        self.out = os.path.join(tmp, "pysink.out")
        self.errf = open(os.path.join(tmp, "pysink.err"), "ab")
        cmd = ["/usr/bin/python3", os.path.join(HERE, "pysink.py"),
               "--port", str(self.port), "--tempfail", str(tempfail),
               "--out", self.out]
        if tls:
            cmd += ["--cert", tls.sink_crt, "--key", tls.sink_key]
        self.proc = subprocess.Popen(
            cmd, stdout=self.errf, stderr=self.errf, stdin=subprocess.DEVNULL)
        if not wait_banner(self.port, 10):
            self.stop()
            raise RuntimeError("pysink did not start")

    def events(self):
        """(Counter of delivered ids, number of tempfailed recipients)."""
        ids, tf = {}, 0
        try:
            with open(self.out) as f:
                for line in f:
                    if line.startswith("D "):
                        k = line[2:].strip()
                        ids[k] = ids.get(k, 0) + 1
                    elif line.startswith("T"):
                        tf += 1
        except OSError:
            pass
        return ids, tf

    def count(self):
        """Messages accepted so far."""
        try:
            with open(self.out, "rb") as f:
                return sum(1 for line in f if line.startswith(b"D "))
        except OSError:
            return 0

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def stop(self):
        stop_pid(self.proc)
        self.errf.close()


# ---------------------------------------------------------------- TLS

class Pki:
    """A CA and two certificates made with openssl for this run: the
    servers' (name bench.example) and the sink's (IP 127.0.0.1, so mailhop
    verifies it as the relayhost [127.0.0.1]); the sink certificate's
    SHA-256 fingerprint for Postfix (smtp_tls_security_level = fingerprint,
    as strict as verification, without the IP-name question)."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "pki")
        os.makedirs(self.dir)

        def ossl(*args):
            subprocess.run(["openssl", *args], check=True, cwd=self.dir,
                           capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=bench CA")
        for name, san in (("server", "DNS:bench.example"),
                          ("sink", "IP:127.0.0.1")):
            ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={name}.bench")
            with open(os.path.join(self.dir, f"{name}.ext"), "w") as f:
                f.write(f"subjectAltName={san}\n")
            ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", f"{name}.ext", "-out", f"{name}.crt")
        for f in os.listdir(self.dir):
            os.chmod(os.path.join(self.dir, f), 0o644)
        os.chmod(self.dir, 0o755)
        self.ca = os.path.join(self.dir, "ca.crt")
        self.server_crt = os.path.join(self.dir, "server.crt")
        self.server_key = os.path.join(self.dir, "server.key")
        self.sink_crt = os.path.join(self.dir, "sink.crt")
        self.sink_key = os.path.join(self.dir, "sink.key")
        r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                            "-sha256", "-in", self.sink_crt],
                           capture_output=True, text=True, check=True)
        self.sink_fp = r.stdout.strip().split("=", 1)[1]

    def mailhop_opts(self):
        return [f"tls_cert_file={self.server_crt}",
                f"tls_key_file={self.server_key}",
                "relayhost_tls=starttls", f"tls_ca_file={self.ca}"]

    def postfix_settings(self):
        return {"smtpd_tls_cert_file": self.server_crt,
                "smtpd_tls_key_file": self.server_key,
                "smtpd_tls_security_level": "may",
                "smtp_tls_security_level": "fingerprint",
                "smtp_tls_fingerprint_digest": "sha256",
                "smtp_tls_fingerprint_cert_match": self.sink_fp,
                # reuse TLS connections to the relayhost, as mailhop does
                "smtp_tls_connection_reuse": "yes",
                "smtp_tls_session_cache_database":
                    "btree:${data_directory}/smtp_scache"}


# ---------------------------------------------------------------- DKIM

DKIM_DOMAIN = "bench.example"  # the From: domain of smtp-source and inject.py
DKIM_VARIANTS = ("unsigned", "ed25519", "rsa2048")


class DkimKeys:
    """Two signing keys for DKIM_DOMAIN made for this run with the built
    binary (`mailhop dkim keygen`): Ed25519 (selector "ed") and RSA-2048
    (selector "rsa"). mailhop's -o options for each variant of the dkim
    profile."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "dkim")
        os.makedirs(self.dir)
        self.files = {}
        for variant, sel, args in (("ed25519", "ed", ["--type", "ed25519"]),
                                   ("rsa2048", "rsa", ["--type", "rsa",
                                                       "--bits", "2048"])):
            path = os.path.join(self.dir, f"{sel}.key")
            r = subprocess.run([MAILHOP, "dkim", "keygen", DKIM_DOMAIN, sel,
                                *args, "--out", path],
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise RuntimeError(f"dkim keygen {variant}: "
                                   + r.stderr.strip()[-300:])
            self.files[variant] = (sel, path)

    def opts(self, variant):
        if variant == "unsigned":
            return []
        sel, path = self.files[variant]
        return [f"dkim_sign={DKIM_DOMAIN}:{sel}:{path}"]


def count_signed(logfile):
    """(accepted, signed): mailhop's `accepted` log lines, and those of
    them with dkim=DKIM_DOMAIN (the message was signed)."""
    acc = signed = 0
    with open(logfile, "rb") as f:
        for line in f:
            if b"event=accepted" in line:
                acc += 1
                if b" dkim=" + DKIM_DOMAIN.encode() in line:
                    signed += 1
    return acc, signed


# ---------------------------------------------------------------- /metrics

def scrape_once(conn):
    """One GET /metrics on an open http.client connection (keep-alive, as
    Prometheus scrapes). Returns the body's size; raises on any failure or
    on a body that is not the Prometheus text format."""
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or b"# TYPE " not in body:
        raise RuntimeError(f"/metrics answered {r.status}")
    return len(body)


class Scraper(threading.Thread):
    """GET /metrics on 127.0.0.1:port once per interval (the first at
    once) until stopped, as a Prometheus server would; counts scrapes and
    failures and keeps the slowest response time."""

    def __init__(self, port, interval=1.0):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.ok = self.errors = self.bytes = 0
        self.max_ms = 0.0
        self.halt = threading.Event()

    def run(self):
        conn = None
        due = time.monotonic()
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                      timeout=5)
                self.bytes = scrape_once(conn)
                self.ok += 1
                self.max_ms = max(self.max_ms,
                                  (time.monotonic() - t0) * 1000.0)
            except (OSError, RuntimeError, http.client.HTTPException):
                self.errors += 1
                if conn:
                    conn.close()
                conn = None
            due += self.interval
            self.halt.wait(max(0.0, due - time.monotonic()))
        if conn:
            conn.close()

    def stop(self):
        self.halt.set()
        self.join(10)


def scrape_burst(pid, port, n, deadline):
    """n scrapes back to back on one keep-alive connection: the server's
    CPU per scrape in ms (thread CPU of pid in ns), or None if any failed
    or the deadline (s) passed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    end = time.monotonic() + deadline
    try:
        c0 = task_cpu_ns(pid)
        for _ in range(n):
            if time.monotonic() > end:
                return None
            scrape_once(conn)
        c1 = task_cpu_ns(pid)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        log(f"  scrape burst failed: {e!r}")
        return None
    finally:
        conn.close()
    return (c1 - c0) / 1e6 / n


# ---------------------------------------------------------------- servers

class Mailhop:
    name = "mailhop"

    def __init__(self, tmp, sink_port, extra=(), port=None, tls=None):
        self.tmp = tmp
        extra = list(extra) + (tls.mailhop_opts() if tls else [])
        self.port = port or free_port()
        cmd = [MAILHOP, "serve",
               "-o", f"listen=127.0.0.1:{self.port}",
               "-o", f"relayhost=[127.0.0.1]:{sink_port}",
               "-o", f"queue_path={tmp}/q.db",
               "-o", f"admin_socket={tmp}/a.sock",
               "-o", "dns_servers=127.0.0.1:9",
               "-o", "hostname=bench.example",
               "-o", "max_sessions=12000"]
        if not tls:
            cmd += ["-o", "relayhost_tls=none"]
        for o in extra:
            cmd += ["-o", o]
        self.errf = open(os.path.join(tmp, "mailhop.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.errf, stderr=self.errf,
                                     stdin=subprocess.DEVNULL)
        if not wait_banner(self.port, 20):
            self.stop()
            raise RuntimeError("mailhop did not start; see its log")
        self.pid = self.proc.pid

    def hwm_kib(self):
        return status_kib(self.pid, "VmHWM")

    def admin(self, *args):
        return subprocess.run([MAILHOP] + list(args[:1]) +
                              ["-s", f"{self.tmp}/a.sock"] + list(args[1:]),
                              capture_output=True, timeout=30, text=True,
                              stdin=subprocess.DEVNULL)

    def kill9(self):
        """SIGKILL, the crash profile's fault."""
        self.proc.kill()
        self.proc.wait(10)
        self.errf.close()

    def stop(self):
        stop_pid(self.proc, 15)
        self.errf.close()


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""


class Postfix:
    """A private Postfix instance: own config, queue and data directories in
    tmp, smtpd on a loopback high port, relayhost the sink. Default
    durability (queue files fsync'd before 250). Never the system one."""
    name = "postfix"

    def __init__(self, tmp, sink_port, process_limit=100, extra=None,
                 tls=None):
        if not IS_ROOT:
            raise RuntimeError("a private Postfix instance needs root")
        self.tmp = tmp
        self.port = free_port()
        self.etc = os.path.join(tmp, "pf-etc")
        spool = os.path.join(tmp, "pf-spool")
        data = os.path.join(tmp, "pf-data")
        for d in (self.etc, spool, data):
            os.makedirs(d)
        os.chmod(tmp, 0o755)
        shutil.chown(data, "postfix")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))
        open(os.path.join(self.etc, "main.cf"), "w").close()
        settings = {
            "compatibility_level": "3.6",
            "config_directory": self.etc,
            "queue_directory": spool,
            "data_directory": data,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "bench.example",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "default_process_limit": str(process_limit),
            "maillog_file": os.path.join(tmp, "maillog"),
            "maillog_file_prefixes": tmp,
            "smtpd_banner": "$myhostname ESMTP",
        }
        settings.update(tls.postfix_settings() if tls else {})
        settings.update(extra or {})
        self.pc(["-e"] + [f"{k}={v}" for k, v in settings.items()])
        r = subprocess.run(["postfix", "-c", self.etc, "start"],
                           capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        pidfile = os.path.join(spool, "pid", "master.pid")
        self.pid = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.pid is None:
            try:
                with open(pidfile) as f:
                    self.pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if r.returncode != 0 or self.pid is None or \
                not wait_banner(self.port, 20):
            self.stop()
            raise RuntimeError("postfix did not start; see "
                               + os.path.join(tmp, "maillog"))

    def pc(self, args):
        subprocess.run(["postconf", "-c", self.etc] + args, check=True,
                       timeout=30, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"],
                       capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
        if self.pid is None:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(
                f"/proc/{self.pid}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{self.pid}"):
            # Only our master and its children, by PID.
            for p in reversed(descendants(self.pid)):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


class PostfixNoFlowDelay(Postfix):
    """Postfix with in_flow_delay = 0: its default (1 s) makes smtpd wait
    while the queue manager is behind, so its accept rate follows its
    delivery rate; without it the accept rates compare like with like."""
    name = "postfix-nofd"

    def __init__(self, tmp, sink_port, **kw):
        kw["extra"] = dict(kw.get("extra") or {}, in_flow_delay="0")
        super().__init__(tmp, sink_port, **kw)


SERVERS = {"mailhop": Mailhop, "postfix": Postfix,
           "postfix-nofd": PostfixNoFlowDelay}


# ---------------------------------------------------------------- profiles

def smtp_source(port, sessions, count, size, timeout):
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count),
           "-l", str(size), "-f", "a@bench.example", "-t", "b@example.net",
           f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    t1 = time.monotonic()
    if r.returncode != 0:
        raise RuntimeError("smtp-source failed: "
                           + r.stderr.decode(errors="replace")[-500:])
    return t0, t1


WARMUP = 500  # messages sent to each fresh server before it is measured


def warm_up(srv, sink, size, timeout):
    """A warm-up load on a fresh server (page cache, allocator, Postfix's
    process pool, SQLite's file), delivered in full before the measured
    run starts. Returns how many messages the sink has counted."""
    if WARMUP <= 0:
        return sink.count()
    smtp_source(srv.port, 20, WARMUP, size, timeout)
    if sink.wait_count(WARMUP, timeout) is None:
        raise RuntimeError(f"warm-up: sink got {sink.count()}/{WARMUP}")
    time.sleep(0.5)
    return sink.count()


def server_kw(server, opts):
    """Constructor keywords for SERVERS[server]: mailhop's extra -o
    options (the dkim and scrape profiles); none for Postfix."""
    if not opts:
        return {}
    if server != "mailhop":
        raise ValueError(f"-o options are for mailhop, not {server}")
    return {"extra": list(opts)}


def run_throughput(server, count, size, sessions, timeout, opts=(),
                   scrape=False, signed=False):
    """Profiles 1-3: accept rate (smtp-source done: every message had its
    250), end-to-end rate (sink has all N), CPU per message, peak memory;
    after a warm-up. mailhop only: opts are extra -o options (the dkim
    profile's dkim_sign); with scrape, metrics_listen is set and /metrics
    is scraped once a second during the measured run (then SCRAPE_BURST
    times back to back for the CPU per scrape); with signed, the log is
    read after the stop for how many accepted messages were signed."""
    tmp = tempfile.mkdtemp(prefix=f"mhbench-{server}-")
    sink = srv = sampler = scraper = None
    try:
        sink = Sink(tmp)
        opts = list(opts)
        if scrape:
            mport = free_port()
            opts.append(f"metrics_listen=127.0.0.1:{mport}")
        srv = SERVERS[server](tmp, sink.port, **server_kw(server, opts))
        base = warm_up(srv, sink, size, timeout)
        sampler = Sampler(srv.pid, 0.2)
        sampler.start()
        cpu0 = tree_cpu(srv.pid)
        if scrape:
            scraper = Scraper(mport, 1.0)
            scraper.start()
        t0, t_acc = smtp_source(srv.port, sessions, count, size, timeout)
        t_e2e = sink.wait_count(base + count, timeout)
        if scraper:
            scraper.stop()
        cpu1 = tree_cpu(srv.pid)
        sampler.stop()
        if t_e2e is None:
            raise RuntimeError(f"sink got {sink.count()}/{count} "
                               f"within {timeout}s")
        res = {
            "accept_rate": count / (t_acc - t0),
            "e2e_rate": count / (t_e2e - t0),
            "cpu_ms_per_msg": (cpu1 - cpu0) * 1000.0 / count,
            "peak_rss_mib": sampler.peak_rss / 1024.0,
            "peak_pss_mib": sampler.peak_pss / 1024.0,
            "peak_procs": sampler.peak_procs,
        }
        if server == "mailhop":
            res["vmhwm_mib"] = srv.hwm_kib() / 1024.0
        if scraper:
            res.update(scrapes=scraper.ok, scrape_errors=scraper.errors,
                       scrape_max_ms=scraper.max_ms,
                       scrape_kib=scraper.bytes / 1024.0)
            per = scrape_burst(srv.pid, mport, SCRAPE_BURST, 60)
            if per is not None:
                res["scrape_cpu_ms"] = per
        if signed:
            srv.stop()
            acc, sig = count_signed(os.path.join(tmp, "mailhop.log"))
            res["signed_share"] = sig / acc if acc else 0.0
        return res
    finally:
        if scraper and scraper.is_alive():
            scraper.stop()
        if sampler and sampler.is_alive():
            sampler.stop()
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        if VERBOSE:
            log(f"  kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


SCRAPE_BURST = 1000  # back-to-back scrapes for the CPU per scrape


def run_latency(server, rate, count, size, sessions, timeout, opts=()):
    """inject.py paced at rate msg/s: p50/p99 from the final CRLF.CRLF to
    the 250, after a warm-up; opts: mailhop's extra -o options."""
    tmp = tempfile.mkdtemp(prefix=f"mhbench-{server}-")
    sink = srv = None
    try:
        sink = Sink(tmp)
        srv = SERVERS[server](tmp, sink.port, **server_kw(server, opts))
        warm_up(srv, sink, size, timeout)
        r = subprocess.run(
            ["/usr/bin/python3", os.path.join(HERE, "inject.py"),
             "--port", str(srv.port), "--rate", str(rate),
             "--count", str(count), "--sessions", str(sessions),
             "--size", str(size), "--deadline", str(timeout)],
            capture_output=True, timeout=timeout + 30,
            stdin=subprocess.DEVNULL)
        out = json.loads(r.stdout)
        if out["errors"]:
            log(f"  {server} latency errors: {out['first_errors']}")
        return {"lat_rate": out["achieved_rate"], "p50_ms": out["p50_ms"],
                "p99_ms": out["p99_ms"], "lat_errors": out["errors"]}
    finally:
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_tls(server, pki, count, size, sessions, timeout):
    """STARTTLS both ways: inject.py (unpaced, SESSIONS sessions, each
    STARTTLS once and then many messages) into the server, which relays to
    pysink.py over verified STARTTLS. accept = messages / injector time,
    end-to-end = until the sink has them all; server CPU per message.
    After a warm-up of the same kind."""
    tmp = tempfile.mkdtemp(prefix=f"mhbench-tls-{server}-")
    sink = srv = None
    try:
        sink = PySink(tmp, tls=pki)
        srv = SERVERS[server](tmp, sink.port, tls=pki)

        def load(n):
            t0 = time.monotonic()
            inj = inject(srv.port, n, sessions, size, timeout, starttls=True)
            out, _ = inj.communicate(timeout=timeout + 30)
            res = json.loads(out)
            if res["errors"]:
                raise RuntimeError(f"tls inject: {res['first_errors']}")
            return t0, time.monotonic()
        if WARMUP > 0:
            load(WARMUP)
            if sink.wait_count(WARMUP, timeout) is None:
                raise RuntimeError(f"tls warm-up: sink got {sink.count()}")
            time.sleep(0.5)
        base = sink.count()
        cpu0 = tree_cpu(srv.pid)
        t0, t_acc = load(count)
        t_e2e = sink.wait_count(base + count, timeout)
        cpu1 = tree_cpu(srv.pid)
        if t_e2e is None:
            raise RuntimeError(f"tls: sink got {sink.count() - base}/{count}")
        return {"tls_accept_rate": count / (t_acc - t0),
                "tls_e2e_rate": count / (t_e2e - t0),
                "tls_cpu_ms_per_msg": (cpu1 - cpu0) * 1000.0 / count}
    finally:
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_tls_direct(pki, count, size, sessions, timeout):
    """inject.py with STARTTLS straight into pysink.py: the ceiling of the
    TLS profile's load tools."""
    tmp = tempfile.mkdtemp(prefix="mhbench-tlsdirect-")
    sink = None
    try:
        sink = PySink(tmp, tls=pki)
        t0 = time.monotonic()
        inj = inject(sink.port, count, sessions, size, timeout,
                     starttls=True)
        inj.communicate(timeout=timeout + 30)
        t1 = sink.wait_count(count, timeout)
        return {"tls_direct_rate": count / (t1 - t0)} if t1 else {}
    finally:
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_direct(count, size, sessions, timeout):
    """smtp-source straight into smtp-sink: this machine's ceiling, and
    smtp-sink's own CPU per message — a floor for any server here: it only
    receives (one connection per message, as in throughput), stores
    nothing and relays nothing."""
    tmp = tempfile.mkdtemp(prefix="mhbench-direct-")
    sink = None
    try:
        sink = Sink(tmp)
        c0 = tree_cpu(sink.proc.pid)
        t0, _ = smtp_source(sink.port, sessions, count, size, timeout)
        t1 = sink.wait_count(count, timeout)
        c1 = tree_cpu(sink.proc.pid)
        return {"direct_rate": count / (t1 - t0),
                "sink_cpu_ms": (c1 - c0) * 1000.0 / count}
    finally:
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_idle(server, conns, timeout):
    """Memory per idle SMTP connection: open conns sessions, read each
    greeting, measure RSS/PSS of the server tree against the baseline; then
    send EHLO on every connection, read the replies, measure again."""
    tmp = tempfile.mkdtemp(prefix=f"mhbench-{server}-")
    sink = srv = None
    socks = []
    try:
        sink = Sink(tmp)
        kw = {"process_limit": conns + 10} if server == "postfix" else {}
        srv = SERVERS[server](tmp, sink.port, **kw)
        time.sleep(0.5)

        def mem():
            pids = descendants(srv.pid)
            return (sum(status_kib(p, "VmRSS") for p in pids),
                    sum(pss_kib(p) for p in pids))
        rss0, pss0 = mem()
        deadline = time.monotonic() + timeout
        errors = 0
        for _ in range(conns):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), 10)
            except OSError:
                errors += 1
                continue
            s.settimeout(max(1.0, deadline - time.monotonic()))
            socks.append(s)
        got = 0
        for s in socks:
            try:
                if s.recv(512).startswith(b"220"):
                    got += 1
            except OSError:
                errors += 1
        time.sleep(0.5)
        rss1, pss1 = mem()
        ehlo = 0
        for s in socks:
            try:
                s.sendall(b"EHLO idle.bench.example\r\n")
            except OSError:
                errors += 1
        for s in socks:
            try:
                buf = b""
                while not re.search(rb"(^|\n)250 [^\n]*\n", buf):
                    d = s.recv(4096)
                    if not d:
                        break
                    buf += d
                if re.search(rb"(^|\n)250 ", buf):
                    ehlo += 1
            except OSError:
                errors += 1
        time.sleep(0.5)
        rss2, pss2 = mem()
        # Issue 12 item 6: memory taken by the flood is given back once the
        # connections close (the server's RSS over its own baseline).
        for s in socks:
            s.close()
        socks = []
        time.sleep(1.5)
        rss3, _ = mem()
        return {f"idle{conns}_ok": got, f"idle{conns}_ehlo_ok": ehlo,
                f"idle{conns}_after_close_rss_mib": (rss3 - rss0) / 1024,
                f"idle{conns}_errors": errors,
                f"idle{conns}_rss_kib_per_conn": (rss1 - rss0) / conns,
                f"idle{conns}_pss_kib_per_conn": (pss1 - pss0) / conns,
                f"idle{conns}_ehlo_rss_kib_per_conn": (rss2 - rss0) / conns,
                f"idle{conns}_ehlo_pss_kib_per_conn": (pss2 - pss0) / conns}
    finally:
        for s in socks:
            s.close()
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def inject(port, count, sessions, size, deadline, rate=0, acked=None,
           starttls=False):
    """Runs inject.py; returns its Popen (JSON on stdout)."""
    cmd = ["/usr/bin/python3", os.path.join(HERE, "inject.py"),
           "--port", str(port), "--rate", str(rate), "--count", str(count),
           "--sessions", str(sessions), "--size", str(size),
           "--deadline", str(deadline), "--timeout", "10"]
    if acked:
        cmd += ["--acked", acked]
    if starttls:
        cmd += ["--starttls"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def run_backlog(count, timeout):
    """mailhop only. The relayhost (smtp-sink) is down while smtp-source
    injects count messages; then the sink comes up, `mailhop queue flush`
    clears the destination's backoff, and we time the drain. RSS (VmRSS)
    sampled every 0.5 s throughout."""
    tmp = tempfile.mkdtemp(prefix="mhbench-backlog-")
    sink = srv = None
    series = []
    halt = threading.Event()
    try:
        sink_port = free_port()
        srv = Mailhop(tmp, sink_port)
        t_base = time.monotonic()

        def sample():
            while not halt.is_set():
                series.append((round(time.monotonic() - t_base, 2),
                               status_kib(srv.pid, "VmRSS")))
                halt.wait(0.5)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rss_start = status_kib(srv.pid, "VmRSS")
        t0, t1 = smtp_source(srv.port, 20, count, 2048, timeout)
        time.sleep(1.0)
        rss_queued = status_kib(srv.pid, "VmRSS")
        t_up = time.monotonic()
        sink = Sink(tmp, port=sink_port)
        fl = srv.admin("queue", "flush")
        if fl.returncode != 0:
            log(f"  queue flush failed: {fl.stderr.strip()}")
        t_done = sink.wait_count(count, timeout)
        t_end = time.monotonic()
        time.sleep(1.0)
        halt.set()
        th.join(2)
        if t_done is None:
            raise RuntimeError(f"backlog: sink got {sink.count()}/{count}")
        drain = [r for t, r in series if t_up - t_base <= t <= t_end - t_base]
        return {"bl_count": count,
                "bl_accept_rate": count / (t1 - t0),
                "bl_drain_s": t_done - t_up,
                "bl_drain_rate": count / (t_done - t_up),
                "bl_rss_start_mib": rss_start / 1024.0,
                "bl_rss_queued_mib": rss_queued / 1024.0,
                "bl_rss_drain_max_mib": max(drain + [rss_queued]) / 1024.0,
                "bl_rss_after_mib": series[-1][1] / 1024.0,
                "bl_vmhwm_mib": srv.hwm_kib() / 1024.0,
                "bl_series": series}
    finally:
        halt.set()
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_tempfail(count, timeout):
    """mailhop only, -o retry_schedule=1s. pysink answers 451 to 10% of
    RCPTs (at random, retries included). inject.py sends count messages,
    each with its own id; every acknowledged id must reach the sink."""
    tmp = tempfile.mkdtemp(prefix="mhbench-tempfail-")
    sink = srv = None
    try:
        sink = PySink(tmp, tempfail=10.0)
        srv = Mailhop(tmp, sink.port, extra=["retry_schedule=1s"])
        acked_f = os.path.join(tmp, "acked")
        t0 = time.monotonic()
        inj = inject(srv.port, count, 10, 1024, timeout, acked=acked_f)
        out, _ = inj.communicate(timeout=timeout + 30)
        res = json.loads(out)
        with open(acked_f) as f:
            acked = set(line.strip() for line in f if line.strip())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids, tf = sink.events()
            if acked <= ids.keys():
                break
            time.sleep(0.2)
        t_all = time.monotonic()
        time.sleep(2.0)  # late duplicates
        ids, tf = sink.events()
        return {"tf_acked": len(acked), "tf_inject_errors": res["errors"],
                "tf_delivered": len(acked & ids.keys()),
                "tf_lost": len(acked - ids.keys()),
                "tf_dups": sum(n - 1 for n in ids.values() if n > 1),
                "tf_tempfails": tf,
                "tf_all_s": t_all - t0}
    finally:
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_crash(kill_after, timeout):
    """mailhop only. inject.py (10 sessions, unpaced) writes the id of
    every message that got its 250; after kill_after s mailhop gets SIGKILL;
    it is restarted on the same queue (same port, same sink). Every
    acknowledged id must reach pysink; duplicates and delivered-but-never-
    acknowledged ids (killed between fsync and 250) are counted."""
    tmp = tempfile.mkdtemp(prefix="mhbench-crash-")
    sink = srv = inj = None
    try:
        sink = PySink(tmp)
        srv = Mailhop(tmp, sink.port)
        acked_f = os.path.join(tmp, "acked")
        inj = inject(srv.port, 1000000, 10, 1024, kill_after + 30,
                     acked=acked_f)
        time.sleep(kill_after)
        ids_before, _ = sink.events()
        srv.kill9()
        out, _ = inj.communicate(timeout=60)
        res = json.loads(out)
        with open(acked_f) as f:
            acked = set(line.strip() for line in f if line.strip())
        t_restart = time.monotonic()
        srv = Mailhop(tmp, sink.port, port=srv.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids, _ = sink.events()
            if acked <= ids.keys():
                break
            time.sleep(0.2)
        t_all = time.monotonic()
        time.sleep(3.0)  # late duplicates, leftovers
        ids, _ = sink.events()
        return {"cr_acked": len(acked),
                "cr_at_sink_at_kill": len(ids_before),
                "cr_lost": len(acked - ids.keys()),
                "cr_dups": sum(n - 1 for n in ids.values() if n > 1),
                "cr_unacked_delivered": len(ids.keys() - acked),
                "cr_recover_s": t_all - t_restart,
                "cr_inject_rate": len(acked) / kill_after,
                "cr_inject_errors": res["errors"]}
    finally:
        if inj and inj.poll() is None:
            inj.kill()
            inj.wait(5)
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- report

def turned(seq, i):
    """seq rotated by i: the order of a profile's variants in round i, so
    that no variant always runs first (or last) in a round."""
    seq = tuple(seq)
    k = i % len(seq)
    return seq[k:] + seq[:k]


def commit():
    """The commit measured: short hash, "+dirty" with uncommitted changes
    to tracked files."""
    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True,
                              text=True).stdout.strip()
    sha = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        sha += "+dirty"
    return f"at {sha}"


def summarize(values):
    v = [x for x in values if isinstance(x, (int, float))]
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


def fmt(s, prec):
    if s is None:
        return "-"
    med, lo, hi = s
    return f"{med:.{prec}f} [{lo:.{prec}f}..{hi:.{prec}f}]"


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="small counts: about 1-2 minutes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profiles",
                    default="direct,throughput,large,tls,latency,dkim,"
                            "scrape,idle,backlog,tempfail,crash",
                    help="comma list of direct,throughput,large,tls,latency,"
                         "dkim,scrape,idle,backlog,tempfail,crash (all by "
                         "default)")
    ap.add_argument("--warmup", type=int,
                    help="warm-up messages per measured run (500; 100 "
                         "with --quick; 0: none)")
    ap.add_argument("--backlog", type=int,
                    help="messages queued while the sink is down "
                         "(20000; 5000 with --quick)")
    ap.add_argument("--count", type=int, help="messages per throughput run")
    ap.add_argument("--json", help="also write raw results to this file")
    ap.add_argument("--keep", action="store_true",
                    help="keep throughput temp dirs (logs) for inspection")
    a = ap.parse_args()
    VERBOSE = a.keep
    global WARMUP
    # 10,000 idle connections: this process holds one socket per
    # connection and mailhop (which inherits the limit) one per session.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 65536) if IS_ROOT else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    quick = a.quick
    count = a.count or (3000 if quick else 10000)
    large_count = 300 if quick else 1000
    lat_count = 1500 if quick else 5000
    idle_conns = 200 if quick else 1000
    idle_big = 1000 if quick else 10000  # mailhop only
    backlog = a.backlog or (5000 if quick else 20000)
    tf_count = 1000 if quick else 5000
    crash_after = 3.0 if quick else 8.0
    tls_count = a.count or (1000 if quick else 5000)
    WARMUP = a.warmup if a.warmup is not None else (100 if quick else 500)
    timeout = 300
    profiles = a.profiles.split(",")
    order = ["mailhop", "postfix"]
    pki_tmp = tempfile.mkdtemp(prefix="mhbench-pki-")
    pki = Pki(pki_tmp) if "tls" in profiles else None
    results = {"mailhop": {}, "postfix": {}, "direct": {}}

    def add(server, res):
        for k, v in res.items():
            results[server].setdefault(k, []).append(v)

    t_start = time.monotonic()
    if "direct" in profiles:
        for i in range(a.rounds):
            add("direct", run_direct(count, 2048, 20, timeout))
            big = run_direct(large_count, 100 * 1024, 20, timeout)
            add("direct", {"direct_rate_large": big["direct_rate"],
                           "sink_cpu_ms_large": big["sink_cpu_ms"]})
        log(f"direct: {fmt(summarize(results['direct']['direct_rate']), 0)}"
            " msg/s")
    if "throughput" in profiles:
        for i in range(a.rounds):
            for srv in order + ["postfix-nofd"]:
                r = run_throughput(srv, count, 2048, 20, timeout)
                log(f"throughput round {i + 1} {srv}: accept "
                    f"{r['accept_rate']:.0f}/s e2e {r['e2e_rate']:.0f}/s "
                    f"cpu {r['cpu_ms_per_msg']:.2f} ms/msg "
                    f"pss {r['peak_pss_mib']:.1f} MiB")
                if srv == "postfix-nofd":
                    add("postfix", {"nofd_" + k: v for k, v in r.items()})
                else:
                    add(srv, r)
    if "large" in profiles:
        for i in range(a.rounds):
            for srv in order:
                r = run_throughput(srv, large_count, 100 * 1024, 20, timeout)
                r = {"large_" + k: v for k, v in r.items()}
                add(srv, r)
                log(f"large round {i + 1} {srv}: accept "
                    f"{r['large_accept_rate']:.0f}/s "
                    f"e2e {r['large_e2e_rate']:.0f}/s")
    if "tls" in profiles:
        for i in range(a.rounds):
            add("direct", run_tls_direct(pki, tls_count, 2048, 20, timeout))
            for srv in order:
                r = run_tls(srv, pki, tls_count, 2048, 20, timeout)
                add(srv, r)
                log(f"tls round {i + 1} {srv}: accept "
                    f"{r['tls_accept_rate']:.0f}/s e2e "
                    f"{r['tls_e2e_rate']:.0f}/s cpu "
                    f"{r['tls_cpu_ms_per_msg']:.2f} ms/msg")
    if "latency" in profiles:
        # Each server at half its own peak (the accept rate of the
        # throughput profile; Postfix as configured there, flow control
        # on), and both at one common rate: the slower one's half peak.
        own = {}
        for srv in order:
            peak = results[srv].get("accept_rate")
            own[srv] = statistics.median(peak) / 2 if peak else 200.0
        common = min(own.values())
        for i in range(a.rounds):
            for srv in order:
                r = run_latency(srv, own[srv], lat_count, 2048, 10, timeout)
                r["lat_target_rate"] = own[srv]
                add(srv, r)
                log(f"latency round {i + 1} {srv} (own half peak): "
                    f"{r['lat_rate']:.0f}/s p50 {r['p50_ms']:.2f} ms "
                    f"p99 {r['p99_ms']:.2f} ms")
                if own[srv] != common:
                    r = run_latency(srv, common, lat_count, 2048, 10,
                                    timeout)
                    log(f"latency round {i + 1} {srv} (common rate): "
                        f"{r['lat_rate']:.0f}/s p50 {r['p50_ms']:.2f} ms "
                        f"p99 {r['p99_ms']:.2f} ms")
                r = {"latc_" + k: v for k, v in r.items()}
                r["latc_target_rate"] = common
                add(srv, r)
    if "dkim" in profiles:
        # mailhop only: unsigned, Ed25519 and RSA-2048 in every round (the
        # order turns each round), ratios to the unsigned run of the same
        # round; then p99 latency for the three at one common offered
        # rate, the slowest variant's half peak.
        dkim_tmp = tempfile.mkdtemp(prefix="mhbench-dkim-")
        try:
            keys = DkimKeys(dkim_tmp)
            for i in range(a.rounds):
                rr = {}
                for v in turned(DKIM_VARIANTS, i):
                    r = run_throughput("mailhop", count, 2048, 20, timeout,
                                       opts=keys.opts(v), signed=True)
                    rr[v] = r
                    log(f"dkim round {i + 1} {v}: accept "
                        f"{r['accept_rate']:.0f}/s e2e {r['e2e_rate']:.0f}/s"
                        f" cpu {r['cpu_ms_per_msg']:.2f} ms/msg, signed "
                        f"{r['signed_share'] * 100:.0f} %")
                out = {}
                for v, r in rr.items():
                    for k in ("accept_rate", "e2e_rate", "cpu_ms_per_msg",
                              "signed_share"):
                        out[f"dk_{v}_{k}"] = r[k]
                for v in DKIM_VARIANTS[1:]:
                    out[f"dk_{v}_e2e_ratio"] = \
                        rr[v]["e2e_rate"] / rr["unsigned"]["e2e_rate"]
                    out[f"dk_{v}_cpu_ratio"] = \
                        rr[v]["cpu_ms_per_msg"] / \
                        rr["unsigned"]["cpu_ms_per_msg"]
                add("mailhop", out)
            common = min(statistics.median(
                results["mailhop"][f"dk_{v}_accept_rate"])
                for v in DKIM_VARIANTS) / 2
            for i in range(a.rounds):
                out = {"dk_lat_target_rate": common}
                for v in turned(DKIM_VARIANTS, i):
                    r = run_latency("mailhop", common, lat_count, 2048, 10,
                                    timeout, opts=keys.opts(v))
                    log(f"dkim latency round {i + 1} {v} ({common:.0f}/s "
                        f"offered): {r['lat_rate']:.0f}/s p50 "
                        f"{r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
                    out.update({f"dk_{v}_lat_rate": r["lat_rate"],
                                f"dk_{v}_p50_ms": r["p50_ms"],
                                f"dk_{v}_p99_ms": r["p99_ms"],
                                f"dk_{v}_lat_errors": r["lat_errors"]})
                for v in DKIM_VARIANTS[1:]:
                    if out["dk_unsigned_p99_ms"]:
                        out[f"dk_{v}_p99_ratio"] = \
                            out[f"dk_{v}_p99_ms"] / out["dk_unsigned_p99_ms"]
                add("mailhop", out)
        finally:
            shutil.rmtree(dkim_tmp, ignore_errors=True)
    if "scrape" in profiles:
        # mailhop only: the throughput profile without metrics_listen, and
        # with it and /metrics scraped once a second during the measured
        # run; the ratio to the run without in the same round.
        for i in range(a.rounds):
            rr = {}
            for v in turned(("off", "on"), i):
                r = run_throughput("mailhop", count, 2048, 20, timeout,
                                   scrape=(v == "on"))
                rr[v] = r
                extra = ""
                if v == "on":
                    extra = (f", {r['scrapes']} scrapes "
                             f"({r['scrape_errors']} failed, slowest "
                             f"{r['scrape_max_ms']:.1f} ms), "
                             f"{r.get('scrape_cpu_ms', float('nan')):.3f} "
                             "ms CPU/scrape")
                log(f"scrape round {i + 1} {v}: e2e {r['e2e_rate']:.0f}/s "
                    f"cpu {r['cpu_ms_per_msg']:.2f} ms/msg{extra}")
            out = {}
            for v, r in rr.items():
                for k in ("accept_rate", "e2e_rate", "cpu_ms_per_msg"):
                    out[f"sc_{v}_{k}"] = r[k]
            for k in ("scrapes", "scrape_errors", "scrape_max_ms",
                      "scrape_kib", "scrape_cpu_ms"):
                if k in rr["on"]:
                    out[f"sc_{k}"] = rr["on"][k]
            out["sc_e2e_ratio"] = rr["on"]["e2e_rate"] / rr["off"]["e2e_rate"]
            if "scrape_cpu_ms" in rr["on"]:
                # One scrape a second against the server's CPU per second
                # at full load without scraping: the cost in CPU, free of
                # the run-to-run noise of the e2e ratio.
                busy_ms = rr["off"]["cpu_ms_per_msg"] * rr["off"]["e2e_rate"]
                out["sc_cost_pct"] = \
                    rr["on"]["scrape_cpu_ms"] * 100.0 / busy_ms
            out["sc_cpu_ratio"] = \
                rr["on"]["cpu_ms_per_msg"] / rr["off"]["cpu_ms_per_msg"]
            add("mailhop", out)
    if "idle" in profiles:
        for i in range(a.rounds):
            for srv in order:
                r = run_idle(srv, idle_conns, timeout)
                add(srv, r)
                log(f"idle round {i + 1} {srv}: "
                    f"{r[f'idle{idle_conns}_ok']} conns, "
                    f"{r[f'idle{idle_conns}_pss_kib_per_conn']:.1f} KiB "
                    f"PSS/conn, after EHLO "
                    f"{r[f'idle{idle_conns}_ehlo_pss_kib_per_conn']:.1f}")
            r = run_idle("mailhop", idle_big, timeout)
            add("mailhop", r)
            log(f"idle round {i + 1} mailhop: {r[f'idle{idle_big}_ok']}/"
                f"{idle_big} conns, {r[f'idle{idle_big}_errors']} errors, "
                f"{r[f'idle{idle_big}_pss_kib_per_conn']:.1f} KiB PSS/conn, "
                f"after EHLO "
                f"{r[f'idle{idle_big}_ehlo_pss_kib_per_conn']:.1f}")
    if "backlog" in profiles:
        for i in range(a.rounds):
            r = run_backlog(backlog, timeout)
            add("mailhop", r)
            log(f"backlog round {i + 1}: {backlog} queued at "
                f"{r['bl_accept_rate']:.0f}/s, drained in "
                f"{r['bl_drain_s']:.1f} s; RSS MiB start "
                f"{r['bl_rss_start_mib']:.1f} queued "
                f"{r['bl_rss_queued_mib']:.1f} drain max "
                f"{r['bl_rss_drain_max_mib']:.1f} after "
                f"{r['bl_rss_after_mib']:.1f}")
    if "tempfail" in profiles:
        for i in range(a.rounds):
            r = run_tempfail(tf_count, timeout)
            add("mailhop", r)
            log(f"tempfail round {i + 1}: acked {r['tf_acked']} delivered "
                f"{r['tf_delivered']} lost {r['tf_lost']} dups "
                f"{r['tf_dups']} 451s {r['tf_tempfails']} all in "
                f"{r['tf_all_s']:.1f} s")
    if "crash" in profiles:
        for i in range(a.rounds):
            r = run_crash(crash_after, timeout)
            add("mailhop", r)
            log(f"crash round {i + 1}: acked {r['cr_acked']} lost "
                f"{r['cr_lost']} dups {r['cr_dups']} delivered-unacked "
                f"{r['cr_unacked_delivered']} recovered in "
                f"{r['cr_recover_s']:.1f} s")
    elapsed = time.monotonic() - t_start
    shutil.rmtree(pki_tmp, ignore_errors=True)

    # (key, label, decimals, ratio?) or (mailhop key, postfix key, label,
    # decimals, ratio?). No ratio where the two figures do not measure the
    # same thing: RSS summed over Postfix's processes counts every shared
    # page once per process (PSS is the fair sum).
    rows = [
        ("e2e_rate", "end-to-end msg/s, 20 sess, 2 KiB", 0, True),
        ("accept_rate", "nofd_accept_rate",
         "accept msg/s, 2 KiB (Postfix in_flow_delay=0)", 0, True),
        ("-", "nofd_e2e_rate", "end-to-end msg/s (Postfix in_flow_delay=0)",
         0, False),
        ("-", "accept_rate", "accept msg/s, Postfix default (flow control)",
         0, False),
        ("cpu_ms_per_msg", "CPU ms/msg (server, user+sys)", 2, True),
        ("vmhwm_mib", "peak RSS MiB (VmHWM)", 1, False),
        ("peak_rss_mib", "peak RSS MiB, sum of procs (no ratio)", 1, False),
        ("peak_pss_mib", "peak PSS MiB, sum of procs (sampled)", 1, True),
        ("peak_procs", "processes (peak)", 0, False),
        ("large_e2e_rate", "end-to-end msg/s, 100 KiB", 0, True),
        ("large_accept_rate", "accept msg/s, 100 KiB (flow control)", 0,
         False),
        ("large_cpu_ms_per_msg", "CPU ms/msg, 100 KiB", 2, True),
        ("tls_e2e_rate", "STARTTLS both ways: end-to-end msg/s", 0, True),
        ("tls_accept_rate", "STARTTLS both ways: accept msg/s", 0, False),
        ("tls_cpu_ms_per_msg", "STARTTLS both ways: CPU ms/msg", 2, True),
        ("lat_target_rate", "latency: offered msg/s (own half peak)", 0,
         False),
        ("lat_rate", "latency: achieved msg/s", 0, False),
        ("p50_ms", "latency p50 ms (end of DATA->250)", 2, True),
        ("p99_ms", "latency p99 ms", 2, True),
        ("latc_target_rate", "latency: offered msg/s (common rate)", 0,
         False),
        ("latc_lat_rate", "latency: achieved msg/s (common rate)", 0, False),
        ("latc_p50_ms", "latency p50 ms (common rate)", 2, True),
        ("latc_p99_ms", "latency p99 ms (common rate)", 2, True),
    ]
    # dkim and scrape: mailhop only; their ratios (to the unsigned or
    # unscraped run of the same round) are rows of their own.
    dk_names = {"unsigned": "unsigned", "ed25519": "Ed25519",
                "rsa2048": "RSA-2048"}
    for v in DKIM_VARIANTS:
        rows += [(f"dk_{v}_e2e_rate",
                  f"dkim {dk_names[v]}: end-to-end msg/s, 2 KiB", 0, False)]
    rows += [("dk_ed25519_e2e_ratio",
              "dkim Ed25519/unsigned end-to-end (>=0.85)", 2, False),
             ("dk_rsa2048_e2e_ratio", "dkim RSA-2048/unsigned end-to-end",
              2, False)]
    for v in DKIM_VARIANTS:
        rows += [(f"dk_{v}_accept_rate",
                  f"dkim {dk_names[v]}: accept msg/s", 0, False)]
    for v in DKIM_VARIANTS:
        rows += [(f"dk_{v}_cpu_ms_per_msg",
                  f"dkim {dk_names[v]}: CPU ms/msg", 2, False)]
    rows += [("dk_ed25519_cpu_ratio", "dkim Ed25519/unsigned CPU per msg",
              2, False),
             ("dk_rsa2048_cpu_ratio", "dkim RSA-2048/unsigned CPU per msg",
              2, False),
             ("dk_ed25519_signed_share", "dkim Ed25519: share of msgs signed",
              2, False),
             ("dk_rsa2048_signed_share",
              "dkim RSA-2048: share of msgs signed", 2, False),
             ("dk_lat_target_rate", "dkim latency: offered msg/s (common)",
              0, False)]
    for v in DKIM_VARIANTS:
        rows += [(f"dk_{v}_p99_ms", f"dkim {dk_names[v]}: latency p99 ms",
                  2, False)]
    rows += [("dk_ed25519_p99_ratio", "dkim Ed25519/unsigned latency p99",
              2, False),
             ("dk_rsa2048_p99_ratio", "dkim RSA-2048/unsigned latency p99",
              2, False),
             ("sc_off_e2e_rate", "scrape off: end-to-end msg/s, 2 KiB", 0,
              False),
             ("sc_on_e2e_rate", "scrape 1/s: end-to-end msg/s", 0, False),
             ("sc_e2e_ratio", "scrape on/off end-to-end (>=0.98)", 2, False),
             ("sc_off_cpu_ms_per_msg", "scrape off: CPU ms/msg", 2, False),
             ("sc_on_cpu_ms_per_msg", "scrape 1/s: CPU ms/msg", 2, False),
             ("sc_scrapes", "scrape: scrapes during the run", 0, False),
             ("sc_scrape_errors", "scrape: failed scrapes", 0, False),
             ("sc_scrape_max_ms", "scrape: slowest response ms", 1, False),
             ("sc_scrape_kib", "scrape: /metrics KiB", 1, False),
             ("sc_scrape_cpu_ms",
              f"scrape: server CPU ms/scrape ({SCRAPE_BURST} b2b)", 3,
              False),
             ("sc_cost_pct", "scrape: 1/s, % of server CPU at full load",
              3, False)]
    for n in (idle_conns, idle_big):
        rows += [
            (f"idle{n}_ok", f"idle conns greeted ({n})", 0, False),
            (f"idle{n}_errors", f"idle conn errors ({n})", 0, False),
            (f"idle{n}_rss_kib_per_conn", f"idle RSS KiB/conn ({n})", 1,
             False),
            (f"idle{n}_pss_kib_per_conn", f"idle PSS KiB/conn ({n})", 1,
             True),
            (f"idle{n}_ehlo_rss_kib_per_conn",
             f"idle RSS KiB/conn after EHLO ({n})", 1, False),
            (f"idle{n}_ehlo_pss_kib_per_conn",
             f"idle PSS KiB/conn after EHLO ({n})", 1, True),
            (f"idle{n}_after_close_rss_mib",
             f"RSS MiB over baseline after they close ({n})", 1, False)]
    rows += [
        ("bl_accept_rate", f"backlog: accept msg/s, sink down ({backlog})",
         0, False),
        ("bl_drain_s", "backlog: drain s after sink up", 1, False),
        ("bl_drain_rate", "backlog: drain msg/s", 0, False),
        ("bl_rss_start_mib", "backlog: RSS MiB at start", 1, False),
        ("bl_rss_queued_mib", "backlog: RSS MiB, all queued", 1, False),
        ("bl_rss_drain_max_mib", "backlog: RSS MiB, max while draining",
         1, False),
        ("bl_rss_after_mib", "backlog: RSS MiB, drained", 1, False),
        ("bl_vmhwm_mib", "backlog: VmHWM MiB", 1, False),
        ("tf_acked", f"tempfail: msgs acked ({tf_count})", 0, False),
        ("tf_tempfails", "tempfail: 451s given by the sink", 0, False),
        ("tf_delivered", "tempfail: acked msgs at sink", 0, False),
        ("tf_lost", "tempfail: lost", 0, False),
        ("tf_dups", "tempfail: duplicates", 0, False),
        ("tf_all_s", "tempfail: s until all at sink", 1, False),
        ("cr_acked", f"crash: acked before SIGKILL ({crash_after:.0f} s)",
         0, False),
        ("cr_lost", "crash: acked msgs lost", 0, False),
        ("cr_dups", "crash: duplicates at sink", 0, False),
        ("cr_unacked_delivered", "crash: delivered, never acked", 0, False),
        ("cr_recover_s", "crash: s from restart to all acked at sink", 1,
         False),
    ]
    w = 44
    pf_version = subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                capture_output=True, text=True).stdout.strip()
    print(f"\nmailhop {commit()} vs Postfix {pf_version} — "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"nproc {os.cpu_count()}, {a.rounds} rounds alternating, "
          f"warm-up {WARMUP} msgs per run, median [min..max], "
          f"{elapsed:.0f} s")
    print("command: scripts/bench " + " ".join(sys.argv[1:]))
    if results["direct"].get("direct_rate"):
        print(f"ceiling smtp-source -> smtp-sink, 2 KiB: "
              f"{fmt(summarize(results['direct']['direct_rate']), 0)} msg/s")
    if results["direct"].get("sink_cpu_ms"):
        print(f"smtp-sink's own CPU per message received there (a floor "
              f"for receiving alone): "
              f"{fmt(summarize(results['direct']['sink_cpu_ms']), 3)} ms")
    if results["direct"].get("direct_rate_large"):
        print(f"ceiling smtp-source -> smtp-sink, 100 KiB: "
              f"{fmt(summarize(results['direct']['direct_rate_large']), 0)}"
              f" msg/s; smtp-sink's CPU per message: "
              f"{fmt(summarize(results['direct']['sink_cpu_ms_large']), 3)}"
              " ms")
    if results["direct"].get("tls_direct_rate"):
        print(f"ceiling inject.py -> pysink.py, STARTTLS, 2 KiB: "
              f"{fmt(summarize(results['direct']['tls_direct_rate']), 0)}"
              " msg/s")
    print(f"{'metric':<{w}} {'mailhop':>24} {'postfix':>24} {'mh/pf':>7}")
    for row in rows:
        if len(row) == 4:
            mkey, label, prec, ratio_ok = row
            pkey = mkey
        else:
            mkey, pkey, label, prec, ratio_ok = row
        m = summarize(results["mailhop"].get(mkey, []))
        p = summarize(results["postfix"].get(pkey, []))
        if m is None and p is None:
            continue
        ratio = f"{m[0] / p[0]:.2f}" if ratio_ok and m and p and p[0] \
            else "-"
        print(f"{label:<{w}} {fmt(m, prec):>24} {fmt(p, prec):>24} "
              f"{ratio:>7}")
    if any(k.startswith(("dk_", "sc_")) for k in results["mailhop"]):
        print("dkim, scrape: mailhop only (Postfix has no built-in DKIM "
              "signer, its users run OpenDKIM as a milter, and no /metrics); "
              "ratios are per round, to mailhop's unsigned / unscraped run "
              "of the same round")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

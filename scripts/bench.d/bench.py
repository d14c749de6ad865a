#!/usr/bin/python3
"""mailhop vs Postfix, side by side, in one run. Driven by scripts/bench.

Every round starts a fresh server (mailhop, or a private Postfix instance in a
temp dir) and a fresh smtp-sink on loopback high ports, runs one load, and
stops exactly the processes it started (by PID). Rounds alternate
mailhop, postfix, mailhop, postfix... Results: median [min..max] per server
and the ratio mailhop/Postfix.
"""
import argparse
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


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port, timeout):
    """Wait until something on port answers with a 220 greeting."""
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


def stop_pid(proc, timeout=10.0):
    """SIGTERM one process we started, SIGKILL after timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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


# ---------------------------------------------------------------- sink

class Sink:
    """smtp-sink on a loopback port, counting delivered messages."""

    def __init__(self, tmp, backlog=1000):
        self.port = free_port()
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


# ---------------------------------------------------------------- servers

class Mailhop:
    name = "mailhop"

    def __init__(self, tmp, sink_port):
        self.tmp = tmp
        self.port = free_port()
        cmd = [MAILHOP, "serve",
               "-o", f"listen=127.0.0.1:{self.port}",
               "-o", f"relayhost=[127.0.0.1]:{sink_port}",
               "-o", "relayhost_tls=none",
               "-o", f"queue_path={tmp}/q.db",
               "-o", f"admin_socket={tmp}/a.sock",
               "-o", "dns_servers=127.0.0.1:9",
               "-o", "hostname=bench.example",
               "-o", "max_sessions=20000"]
        self.errf = open(os.path.join(tmp, "mailhop.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.errf, stderr=self.errf,
                                     stdin=subprocess.DEVNULL)
        if not wait_banner(self.port, 20):
            self.stop()
            raise RuntimeError("mailhop did not start; see its log")
        self.pid = self.proc.pid

    def hwm_kib(self):
        return status_kib(self.pid, "VmHWM")

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
"""


class Postfix:
    """A private Postfix instance: own config, queue and data directories in
    tmp, smtpd on a loopback high port, relayhost the sink. Default
    durability (queue files fsync'd before 250). Never the system one."""
    name = "postfix"

    def __init__(self, tmp, sink_port, process_limit=100):
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


SERVERS = {"mailhop": Mailhop, "postfix": Postfix}


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


def run_throughput(server, count, size, sessions, timeout):
    """Profiles 1-3: accept rate (smtp-source done: every message had its
    250), end-to-end rate (sink has all N), CPU per message, peak memory."""
    tmp = tempfile.mkdtemp(prefix=f"mhbench-{server}-")
    sink = srv = sampler = None
    try:
        sink = Sink(tmp)
        srv = SERVERS[server](tmp, sink.port)
        sampler = Sampler(srv.pid, 0.2)
        sampler.start()
        cpu0 = tree_cpu(srv.pid)
        t0, t_acc = smtp_source(srv.port, sessions, count, size, timeout)
        t_e2e = sink.wait_count(count, timeout)
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
        return res
    finally:
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


def run_latency(server, rate, count, size, sessions, timeout):
    tmp = tempfile.mkdtemp(prefix=f"mhbench-{server}-")
    sink = srv = None
    try:
        sink = Sink(tmp)
        srv = SERVERS[server](tmp, sink.port)
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


def run_direct(count, size, sessions, timeout):
    """smtp-source straight into smtp-sink: this machine's ceiling."""
    tmp = tempfile.mkdtemp(prefix="mhbench-direct-")
    sink = None
    try:
        sink = Sink(tmp)
        t0, _ = smtp_source(sink.port, sessions, count, size, timeout)
        t1 = sink.wait_count(count, timeout)
        return {"direct_rate": count / (t1 - t0)}
    finally:
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_idle(server, conns, timeout):
    """Memory per idle SMTP connection: open conns sessions, read each
    greeting, measure RSS/PSS of the server tree against the baseline."""
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
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", srv.port), 10)
            s.settimeout(max(1.0, deadline - time.monotonic()))
            socks.append(s)
        got = 0
        for s in socks:
            if s.recv(512).startswith(b"220"):
                got += 1
        time.sleep(0.5)
        rss1, pss1 = mem()
        return {"idle_ok": got,
                "idle_rss_kib_per_conn": (rss1 - rss0) / conns,
                "idle_pss_kib_per_conn": (pss1 - pss0) / conns}
    finally:
        for s in socks:
            s.close()
        if srv:
            srv.stop()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- report

def summarize(values):
    v = [x for x in values if x is not None]
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
    ap.add_argument("--profiles", default="direct,throughput,latency,idle",
                    help="comma list of direct,throughput,large,latency,idle"
                         " (full run adds large)")
    ap.add_argument("--count", type=int, help="messages per throughput run")
    ap.add_argument("--json", help="also write raw results to this file")
    ap.add_argument("--keep", action="store_true",
                    help="keep throughput temp dirs (logs) for inspection")
    a = ap.parse_args()
    VERBOSE = a.keep
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    quick = a.quick
    count = a.count or (3000 if quick else 10000)
    large_count = 300 if quick else 1000
    lat_count = 1500 if quick else 5000
    idle_conns = 200 if quick else 1000
    timeout = 300
    profiles = a.profiles.split(",")
    if not quick and a.profiles == ap.get_default("profiles"):
        profiles.insert(2, "large")
    order = ["mailhop", "postfix"]
    results = {"mailhop": {}, "postfix": {}, "direct": {}}

    def add(server, res):
        for k, v in res.items():
            results[server].setdefault(k, []).append(v)

    t_start = time.monotonic()
    if "direct" in profiles:
        for i in range(a.rounds):
            add("direct", run_direct(count, 2048, 20, timeout))
        log(f"direct: {fmt(summarize(results['direct']['direct_rate']), 0)}"
            " msg/s")
    if "throughput" in profiles:
        for i in range(a.rounds):
            for srv in order:
                r = run_throughput(srv, count, 2048, 20, timeout)
                add(srv, r)
                log(f"throughput round {i + 1} {srv}: accept "
                    f"{r['accept_rate']:.0f}/s e2e {r['e2e_rate']:.0f}/s "
                    f"cpu {r['cpu_ms_per_msg']:.2f} ms/msg "
                    f"pss {r['peak_pss_mib']:.1f} MiB")
    if "large" in profiles:
        for i in range(a.rounds):
            for srv in order:
                r = run_throughput(srv, large_count, 100 * 1024, 20, timeout)
                r = {"large_" + k: v for k, v in r.items()}
                add(srv, r)
                log(f"large round {i + 1} {srv}: accept "
                    f"{r['large_accept_rate']:.0f}/s "
                    f"e2e {r['large_e2e_rate']:.0f}/s")
    if "latency" in profiles:
        for i in range(a.rounds):
            for srv in order:
                peak = results[srv].get("accept_rate")
                rate = statistics.median(peak) / 2 if peak else 200.0
                r = run_latency(srv, rate, lat_count, 2048, 10, timeout)
                r["lat_target_rate"] = rate
                add(srv, r)
                log(f"latency round {i + 1} {srv}: {r['lat_rate']:.0f}/s "
                    f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
    if "idle" in profiles:
        for i in range(a.rounds):
            for srv in order:
                r = run_idle(srv, idle_conns, timeout)
                add(srv, r)
                log(f"idle round {i + 1} {srv}: {r['idle_ok']} conns, "
                    f"{r['idle_pss_kib_per_conn']:.1f} KiB PSS/conn")
    elapsed = time.monotonic() - t_start

    rows = [
        ("accept_rate", "accept msg/s, 20 sess, 2 KiB", 0, True),
        ("e2e_rate", "end-to-end msg/s, 2 KiB", 0, True),
        ("cpu_ms_per_msg", "CPU ms/msg (server, user+sys)", 2, False),
        ("vmhwm_mib", "peak RSS MiB (VmHWM)", 1, False),
        ("peak_rss_mib", "peak RSS MiB, sum of procs (sampled)", 1, False),
        ("peak_pss_mib", "peak PSS MiB, sum of procs (sampled)", 1, False),
        ("peak_procs", "processes (peak)", 0, False),
        ("large_accept_rate", "accept msg/s, 100 KiB", 0, True),
        ("large_e2e_rate", "end-to-end msg/s, 100 KiB", 0, True),
        ("large_cpu_ms_per_msg", "CPU ms/msg, 100 KiB", 2, False),
        ("lat_target_rate", "latency: offered msg/s (half peak)", 0, None),
        ("lat_rate", "latency: achieved msg/s", 0, None),
        ("p50_ms", "latency p50 ms (end of DATA->250)", 2, False),
        ("p99_ms", "latency p99 ms", 2, False),
        ("idle_rss_kib_per_conn",
         f"idle conn RSS KiB/conn ({idle_conns})", 1, False),
        ("idle_pss_kib_per_conn",
         f"idle conn PSS KiB/conn ({idle_conns})", 1, False),
    ]
    w = 40
    print(f"\nmailhop vs Postfix {subprocess.run(['postconf', '-d', '-h', 'mail_version'], capture_output=True, text=True).stdout.strip()}"
          f" — nproc {os.cpu_count()}, {a.rounds} rounds alternating, "
          f"median [min..max], {elapsed:.0f} s")
    if results["direct"]:
        print(f"ceiling smtp-source -> smtp-sink, 2 KiB: "
              f"{fmt(summarize(results['direct']['direct_rate']), 0)} msg/s")
    print(f"{'metric':<{w}} {'mailhop':>24} {'postfix':>24} {'mh/pf':>7}")
    for key, label, prec, _ in rows:
        m = summarize(results["mailhop"].get(key, []))
        p = summarize(results["postfix"].get(key, []))
        if m is None and p is None:
            continue
        ratio = f"{m[0] / p[0]:.2f}" if m and p and p[0] else "-"
        print(f"{label:<{w}} {fmt(m, prec):>24} {fmt(p, prec):>24} "
              f"{ratio:>7}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

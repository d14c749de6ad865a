"""Loopback ports for the processes a test or a benchmark starts.

The usual trick -- bind port 0, read the port, close, hand it on -- races:
the kernel gives that same port to the next connect() as its source port
(it comes from ip_local_port_range), and with two pytest-xdist workers and
a relay making outbound connections, one in a few hundred runs the server
started on it fails with "address already in use".

So ports come from outside the ephemeral range, where the kernel never
picks one on its own; each xdist worker has its own slice of that range,
a process hands a port out again only after going round its whole slice,
and a port is handed out
only if binding it (TCP, and UDP when asked) succeeds right now."""
import itertools
import os
import socket

_EPHEMERAL = "/proc/sys/net/ipv4/ip_local_port_range"


def _ephemeral():
    try:
        with open(_EPHEMERAL) as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _span():
    """The largest run of ports above 10000 the kernel never picks itself,
    or None when there is no room for one (an ephemeral range tuned to
    cover nearly everything)."""
    lo, hi = _ephemeral()
    below, above = (max(10000, 1024), lo), (hi + 1, 65536)
    start, end = max(below, above, key=lambda r: r[1] - r[0])
    return (start, end) if end - start >= 1000 else None


def _slice():
    """This process's ports: its xdist worker's share of the span, starting
    at an offset taken from the pid, so that two runs one after the other
    (integration-asan, then integration) do not start on the same port."""
    start, end = _span()  # not None: free_port checked
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = max(1, (end - start) // workers)
    first = start + (index % workers) * size
    offset = (os.getpid() * 7919) % size
    return [first + (offset + i) % size for i in range(size)]


_ports = None


def _bindable(host, port, kind):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host="127.0.0.1", udp=False):
    """A port on host that nothing listens on, that the kernel will not give
    to an outgoing connection, and that this process has not handed out
    since it last went round its slice.  udp=True also requires the UDP
    port to be free (DNS servers take both)."""
    global _ports
    if _span() is None:
        # No port is outside the ephemeral range: the kernel's choice (the
        # race this module exists for is back, and rare again).
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(100):
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if not udp or _bindable(host, port, socket.SOCK_DGRAM):
                return port
        raise AssertionError(f"no free port on {host}")
    if _ports is None:
        _ports = itertools.cycle(_slice())
    for _ in range(2000):
        port = next(_ports)
        if not _bindable(host, port, socket.SOCK_STREAM):
            continue
        if udp and not _bindable(host, port, socket.SOCK_DGRAM):
            continue
        return port
    raise AssertionError(f"no free port on {host} outside the ephemeral range")

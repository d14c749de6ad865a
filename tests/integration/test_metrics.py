"""HTTP metrics and health (CONTRACT §2 metrics_listen, §7), black-box: the
real binary, a real HTTP client (http.client), a loopback DNS server and an
SMTP sink, `mailhop status` for agreement, `promtool check metrics` and a
real Prometheus (Debian's package) scraping mailhop on loopback."""
import http.client
import json
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, Raw, free_port
from dnsserver import DNSServer
from smtpsink import Sink

FAMILIES = {
    "mailhop_build_info": "gauge",
    "mailhop_up_seconds": "gauge",
    "mailhop_accepting": "gauge",
    "mailhop_paused": "gauge",
    "mailhop_smtp_sessions": "gauge",
    "mailhop_outbound_connections": "gauge",
    "mailhop_queue_messages": "gauge",
    "mailhop_queue_recipients": "gauge",
    "mailhop_queue_held_messages": "gauge",
    "mailhop_queue_oldest_message_age_seconds": "gauge",
    "mailhop_received_messages_total": "counter",
    "mailhop_rejected_total": "counter",
    "mailhop_recipients_total": "counter",
    "mailhop_delivery_duration_seconds": "histogram",
    "mailhop_tls_handshakes_total": "counter",
    "mailhop_dns_queries_total": "counter",
    "mailhop_dkim_signed_total": "counter",
    "mailhop_destinations_backed_off": "gauge",
}
SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def wait(fn, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def get(port, path, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def parse(text):
    """{series: value} for every sample; series is name plus its labels."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def scrape(m):
    status, headers, body = get(m.metrics_port, "/metrics")
    assert status == 200
    return parse(body)


def status(m):
    r = m.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def send(m, sender, rcpts, body="Subject: t\r\n\r\nhello\r\n"):
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    s.ehlo("client.example")
    s.sendmail(sender, rcpts, body)
    s.quit()


def smtp_session_completes(m):
    """A whole SMTP transaction; True when the message got its 250."""
    c = Raw(m.port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.example")[0] == 250
    assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250
    assert c.cmd("RCPT TO:<x@d.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    code = c.cmd("Subject: s\r\n\r\nhi\r\n.")[0]
    c.cmd("QUIT")
    c.close()
    return code == 250


@pytest.fixture
def net(mailhop):
    """A DNS server, a sink on a shared MX port, and a relay factory whose
    relay has metrics_listen on a free port."""
    port = free_port()
    dns = DNSServer({}, port=0)
    dns.start()
    sinks = []

    class Net:
        smtp_port = port

        def sink(self, ip="127.0.0.1", **kw):
            s = Sink(host=ip, port=port, **kw)
            sinks.append(s)
            return s

        def records(self, recs):
            dns.set_records(recs)

        def relay(self, **conf):
            mport = free_port()
            conf.setdefault("metrics_listen", f"127.0.0.1:{mport}")
            conf.setdefault("dns_servers", f"127.0.0.1:{dns.port}")
            conf.setdefault("smtp_port", port)
            conf.setdefault("retry_schedule", "1h")
            conf.setdefault("outbound_tls", "none")
            conf.setdefault("dns_timeout", "1s")
            m = mailhop(**conf)
            m.metrics_port = mport
            m.wait_log(f"event=metrics_listening addr=127.0.0.1:{mport}")
            return m

    yield Net()
    for s in sinks:
        s.stop()
    dns.stop()


def test_endpoints_and_exposition(net):
    m = net.relay()
    status_, headers, body = get(m.metrics_port, "/metrics")
    assert status_ == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for name, typ in FAMILIES.items():
        assert body.count(f"\n# HELP {name} ") + body.startswith(
            f"# HELP {name} ") == 1, name
        assert f"\n# TYPE {name} {typ}\n" in body, name
    declared = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    assert declared == set(FAMILIES)
    samples = parse(body)
    # Label values come from fixed sets only.
    for series in samples:
        for key, value in re.findall(r'(\w+)="([^"]*)"', series):
            allowed = {
                "version": None, "le": None,
                "state": {"queued", "deferred"},
                "reason": {"relay", "sender", "size", "auth", "syntax", "loop",
                           "other"},
                "result": {"delivered", "deferred", "bounced", "expired", "ok",
                           "failed", "nxdomain", "servfail", "timeout"},
                "direction": {"inbound", "outbound"},
            }
            assert key in allowed, series
            assert allowed[key] is None or value in allowed[key], series
    assert samples["mailhop_accepting"] == 1
    assert samples['mailhop_build_info{version="%s"}' % status(m)["version"]] == 1
    les = [s for s in samples if s.startswith(
        "mailhop_delivery_duration_seconds_bucket")]
    assert 'mailhop_delivery_duration_seconds_bucket{le="0.1"}' in les
    assert 'mailhop_delivery_duration_seconds_bucket{le="432000"}' in les
    assert 'mailhop_delivery_duration_seconds_bucket{le="+Inf"}' in les

    assert get(m.metrics_port, "/healthz")[0] == 200
    st, _, body = get(m.metrics_port, "/readyz")
    assert (st, body) == (200, "ready\n")
    assert get(m.metrics_port, "/metrics?x=1")[0] == 200
    assert get(m.metrics_port, "/")[0] == 404
    assert get(m.metrics_port, "/metricsx")[0] == 404
    assert get(m.metrics_port, "/nothing", method="POST")[0] == 404
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        st, headers, _ = get(m.metrics_port, "/metrics", method=method)
        assert st == 405, method
        assert headers.get("Allow") == "GET, HEAD"
    st, headers, body = get(m.metrics_port, "/metrics", method="HEAD")
    assert st == 200 and body == ""

    # Keep-alive: several requests on one connection.
    c = http.client.HTTPConnection("127.0.0.1", m.metrics_port, timeout=10)
    for path in ("/healthz", "/metrics", "/readyz"):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.status == 200
        assert r.getheader("Connection", "").lower() != "close"
    c.close()


@pytest.mark.skipif(not shutil.which("promtool"), reason="no promtool")
def test_promtool_check_metrics(net):
    m = net.relay()
    body = get(m.metrics_port, "/metrics")[2]
    r = subprocess.run(["promtool", "check", "metrics"], input=body,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_agrees_with_status_while_mail_flows(net):
    """Delivered, deferred, bounced and rejected mail; held and queued
    messages; every figure of status equals its metric."""
    net.records({"ok.test": [("MX", "10 mx.ok.test", 60)],
                 "mx.ok.test": [("A", "127.0.0.2", 60)],
                 "slow.test": [("MX", "10 mx.slow.test", 60)],
                 "mx.slow.test": [("A", "127.0.0.3", 60)]})
    ok = net.sink("127.0.0.2")
    net.sink("127.0.0.3", rcpt_reply=lambda addr, n: "451 4.7.1 later")
    m = net.relay(allowed_sender_domains="src.test")
    for i in range(3):
        send(m, "a@src.test", [f"r{i}@ok.test"])
    send(m, "a@src.test", ["d1@slow.test", "d2@slow.test"])
    send(m, "a@src.test", ["x@nx.test"])  # NXDOMAIN: bounced at once
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(m, "a@other.test", ["y@ok.test"])  # sender refused
    c = Raw(m.port)
    c.reply()
    assert c.cmd("FOO")[0] == 500                       # syntax
    assert c.cmd("EHLO client.example")[0] == 250
    assert c.cmd("RCPT TO:<q@ok.test>")[0] == 503       # sequence: syntax
    assert c.cmd("MAIL FROM:<a@src.test> SIZE=999999999999")[0] == 552
    c.cmd("QUIT")
    c.close()
    ok.wait(3)

    def settled():
        st = status(m)
        return (st["counters"]["delivered"] == 3 and
                st["counters"]["deferred"] == 2 and
                st["counters"]["bounced"] >= 1 and
                st["outbound"] == 0 and st)
    wait(settled, what="deliveries settled")
    st = status(m)
    s = scrape(m)
    st2 = status(m)
    assert st["counters"] == st2["counters"] and st["queue"]["messages"] == \
        st2["queue"]["messages"], "state moved between the two reads"
    assert s["mailhop_received_messages_total"] == st["counters"]["received"] == 5
    assert s['mailhop_recipients_total{result="delivered"}'] == 3
    assert s['mailhop_recipients_total{result="deferred"}'] == \
        st["counters"]["deferred"]
    assert s['mailhop_recipients_total{result="bounced"}'] == \
        st["counters"]["bounced"]
    assert s['mailhop_recipients_total{result="expired"}'] == 0
    assert s["mailhop_queue_messages"] == st["queue"]["messages"] >= 1
    q = st["queue"]
    assert s['mailhop_queue_recipients{state="deferred"}'] == q["deferred"] == 2
    assert s['mailhop_queue_recipients{state="queued"}'] == \
        q["recipients"] - q["deferred"]
    assert s["mailhop_queue_held_messages"] == q["held"] == 0
    assert abs(s["mailhop_queue_oldest_message_age_seconds"] -
               q["oldest_age_s"]) <= 1
    assert s["mailhop_smtp_sessions"] == st["sessions"]
    assert s["mailhop_outbound_connections"] == st["outbound"]
    assert s["mailhop_paused"] == int(st["paused"])
    assert s["mailhop_accepting"] == int(st["accepting"]) == 1
    assert abs(s["mailhop_up_seconds"] - st["uptime_s"]) <= 1
    # Per-recipient histogram: one observation per delivered recipient.
    assert s["mailhop_delivery_duration_seconds_count"] == 3
    assert s['mailhop_delivery_duration_seconds_bucket{le="+Inf"}'] == 3
    assert s['mailhop_delivery_duration_seconds_bucket{le="15"}'] == 3
    assert s['mailhop_rejected_total{reason="sender"}'] == 1
    assert s['mailhop_rejected_total{reason="syntax"}'] == 2
    assert s['mailhop_rejected_total{reason="size"}'] == 1
    assert s['mailhop_rejected_total{reason="relay"}'] == 0
    assert s['mailhop_dns_queries_total{result="ok"}'] >= 3
    assert s['mailhop_dns_queries_total{result="nxdomain"}'] >= 1
    assert s["mailhop_destinations_backed_off"] == 0

    # Hold the deferred message and pause: both gauges follow status.
    mid = json.loads(m.cli("queue", "--json").stdout)["messages"][0]["id"]
    r = m.cli("queue", "hold", mid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert m.cli("pause").returncode == 0
    st = status(m)
    s = scrape(m)
    assert s["mailhop_queue_held_messages"] == st["queue"]["held"] == 1
    assert s["mailhop_paused"] == 1 and st["paused"] is True


def test_backed_off_destination_and_dns_failures(net):
    """A destination whose MX refuses connections is backed off; SERVFAIL
    is counted."""
    net.records({"down.test": [("MX", "10 mx.down.test", 60)],
                 "mx.down.test": [("A", "127.0.0.9", 60)]})
    m = net.relay()
    send(m, "a@src.test", ["x@down.test"])
    wait(lambda: scrape(m)["mailhop_destinations_backed_off"] == 1,
         what="destination backed off")
    assert status(m)["counters"]["deferred"] == 1


def test_readyz_503_while_shutting_down(net):
    m = net.relay(shutdown_timeout="8s")
    # A session in flight keeps the relay in its shutdown's first stage.
    c = Raw(m.port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.example")[0] == 250
    assert get(m.metrics_port, "/readyz")[0] == 200
    m.proc.send_signal(signal.SIGTERM)
    m.wait_log("event=shutdown")
    st, _, body = get(m.metrics_port, "/readyz")
    assert st == 503 and "shutting down" in body
    assert get(m.metrics_port, "/healthz")[0] == 200
    assert scrape(m)["mailhop_accepting"] == 0
    assert c.cmd("QUIT")[0] == 221
    c.close()
    assert m.proc.wait(20) == 0


def test_many_connections_do_not_stall_smtp(net):
    """More HTTP connections than the limit (64), held open and idle, and a
    1 MB request line: SMTP sessions still complete while they are open,
    and the endpoint serves again once they are gone."""
    net.records({"d.test": [("MX", "10 mx.d.test", 60)],
                 "mx.d.test": [("A", "127.0.0.2", 60)]})
    net.sink("127.0.0.2")
    m = net.relay()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10000
    if soft < want + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(hard, want + 200), hard))
        soft = min(hard, want + 200)
    n = min(want, soft - 200)
    assert n > 64 * 2
    conns = []
    try:
        # One sends a 1 MB request line; later, others half a request.
        big = socket.create_connection(("127.0.0.1", m.metrics_port),
                                       timeout=10)
        conns.append(big)
        try:
            big.sendall(b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n")
        except OSError:
            pass  # refused mid-way: fine
        # Non-blocking connects: past the limit and the kernel's backlog the
        # handshakes simply wait, as a flood's would.
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", m.metrics_port))
            conns.append(s)
        for s in conns[:50]:
            try:
                s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
        # While all of them are open, SMTP goes on.
        assert smtp_session_completes(m)
        assert smtp_session_completes(m)
        st = status(m)
        assert st["counters"]["received"] == 2
    finally:
        for s in conns:
            s.close()
    # Once they are gone, the endpoint answers again.
    assert wait(lambda: get(m.metrics_port, "/healthz", timeout=30)[0] == 200,
                timeout=60, what="healthz after the flood")


def test_big_request_line_refused(net):
    m = net.relay()
    s = socket.create_connection(("127.0.0.1", m.metrics_port), timeout=20)
    try:
        s.sendall(b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    s.close()
    # Refused with 414/431, or cut off without an answer: never a 200.
    assert got == b"" or re.match(rb"HTTP/1\.1 4(14|31|00) ", got), got[:100]
    assert smtp_session_completes_or_relay(m)
    assert get(m.metrics_port, "/healthz")[0] == 200


def smtp_session_completes_or_relay(m):
    c = Raw(m.port)
    ok = c.reply()[0] == 220 and c.cmd("NOOP")[0] == 250
    c.close()
    return ok


def test_bad_metrics_listen(mailhop, tmp_path):
    from conftest import run
    r = run("check", "-o", "metrics_listen=localhost:9100")
    assert r.returncode == 1 and "metrics_listen" in (r.stdout + r.stderr)
    # A taken port is a runtime failure: exit 2 naming the address.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    m = mailhop(start=False, metrics_listen=f"127.0.0.1:{port}")
    m.start(wait=False)
    assert m.proc.wait(20) == 2
    assert f"metrics_listen 127.0.0.1:{port}" in m.log()
    busy.close()


def test_real_prometheus_scrapes_mailhop(net, tmp_path):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.skip("Debian's prometheus package is not installed")
    net.records({"ok.test": [("MX", "10 mx.ok.test", 60)],
                 "mx.ok.test": [("A", "127.0.0.2", 60)]})
    sink = net.sink("127.0.0.2")
    m = net.relay()
    for i in range(4):
        send(m, "a@src.test", [f"r{i}@ok.test"])
    sink.wait(4)
    wait(lambda: status(m)["counters"]["delivered"] == 4, what="delivered")

    pdir = tmp_path / "prometheus"
    pdir.mkdir()
    (pdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: mailhop
    static_configs:
      - targets: ['127.0.0.1:{m.metrics_port}']
""")
    web = free_port()
    log = open(pdir / "prometheus.log", "wb")
    p = subprocess.Popen([prom, f"--config.file={pdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={pdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{web}"],
                         stdout=log, stderr=log)

    def query(q):
        url = (f"http://127.0.0.1:{web}/api/v1/query?" +
               urllib.parse.urlencode({"query": q}))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                j = json.load(r)
        except OSError:
            return None
        if j.get("status") != "success" or not j["data"]["result"]:
            return None
        return [(x["metric"], float(x["value"][1]))
                for x in j["data"]["result"]]

    try:
        up = wait(lambda: query('up{job="mailhop"}'), timeout=90,
                  what="prometheus to scrape mailhop")
        assert up[0][1] == 1, up
        got = wait(lambda: query("mailhop_received_messages_total"),
                   timeout=30, what="mailhop_received_messages_total")
        assert got[0][1] == 4
        got = query('mailhop_recipients_total{result="delivered"}')
        assert got and got[0][1] == 4
        got = query("mailhop_delivery_duration_seconds_count")
        assert got and got[0][1] == 4
        got = query("mailhop_queue_messages")
        assert got and got[0][1] == 0
        # Every expression of the dashboard and the alert rules is valid
        # PromQL to this Prometheus, and names only metrics mailhop has.
        for expr in dashboard_exprs() + alert_exprs():
            q = (expr.replace("$__rate_interval", "1m")
                 .replace('"$instance"', '".*"'))
            url = (f"http://127.0.0.1:{web}/api/v1/query?" +
                   urllib.parse.urlencode({"query": q}))
            with urllib.request.urlopen(url, timeout=5) as r:
                assert json.load(r)["status"] == "success", expr
        assert p.poll() is None
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def metric_names(expr):
    names = set(re.findall(r"\b(mailhop_[a-z_]+)", expr))
    out = set()
    for n in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and n[:-len(suffix)] in FAMILIES:
                n = n[:-len(suffix)]
        out.add(n)
    return out


def dashboard_exprs():
    d = json.loads((ROOT / "config" / "grafana-mailhop.json").read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def alert_exprs():
    import yaml
    rules = yaml.safe_load(
        (ROOT / "config" / "prometheus-alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_grafana_dashboard_fields():
    """The dashboard imports: the fields Grafana's schema needs for what it
    uses (panels with id, type, gridPos, a datasource placeholder and
    targets with refId and expr), over metrics that exist."""
    d = json.loads((ROOT / "config" / "grafana-mailhop.json").read_text())
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    assert d["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert d["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for p in d["panels"]:
        assert p["type"] in {"timeseries", "stat"}
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"] == {"type": "prometheus",
                                   "uid": "${DS_PROMETHEUS}"}
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"] and t["datasource"] == p["datasource"]
            names = metric_names(t["expr"])
            assert names and names <= set(FAMILIES), t["expr"]
            used |= names
    # What the issue asks to see.
    for n in ("mailhop_queue_messages", "mailhop_queue_recipients",
              "mailhop_queue_oldest_message_age_seconds",
              "mailhop_received_messages_total", "mailhop_recipients_total",
              "mailhop_delivery_duration_seconds", "mailhop_smtp_sessions",
              "mailhop_outbound_connections", "mailhop_tls_handshakes_total",
              "mailhop_dns_queries_total"):
        assert n in used, n
    var = d["templating"]["list"][0]
    assert var["name"] == "instance"


@pytest.mark.skipif(not shutil.which("promtool"), reason="no promtool")
def test_alert_rules(tmp_path):
    """promtool checks the rules, and its rule tests show that the queue-age
    and not-ready alerts fire on synthetic series and stay quiet without
    cause."""
    rules = ROOT / "config" / "prometheus-alerts.yml"
    r = subprocess.run(["promtool", "check", "rules", str(rules)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for expr in alert_exprs():
        assert metric_names(expr) <= set(FAMILIES), expr
    test = tmp_path / "alerts_test.yml"
    test.write_text(f"""
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mailhop_queue_oldest_message_age_seconds{{instance="a",job="mailhop"}}'
        values: '3000+60x20'
      - series: 'mailhop_accepting{{instance="a",job="mailhop"}}'
        values: '1 1 1 0x15'
      - series: 'up{{instance="a",job="mailhop"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: MailhopOldestMessageOver1h
        exp_alerts: []
      - eval_time: 20m
        alertname: MailhopOldestMessageOver1h
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, job: mailhop}}
            exp_annotations:
              summary: "mail waits over an hour on a"
              description: "The oldest queued message is 1h 10m 0s old. Check `mailhop queue` for the last errors of its recipients."
      - eval_time: 5m
        alertname: MailhopNotReady
        exp_alerts: []
      - eval_time: 15m
        alertname: MailhopNotReady
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, job: mailhop}}
            exp_annotations:
              summary: "mailhop a is not accepting mail"
              description: "The relay has not accepted mail for 10 minutes (draining, shutting down, or its listeners are closed); /readyz answers 503."
      - eval_time: 15m
        alertname: MailhopDown
        exp_alerts: []
""")
    r = subprocess.run(["promtool", "test", "rules", str(test)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def self_signed(tmp_path):
    """A throw-away certificate for mailhop.test, made with the openssl
    CLI."""
    key, crt = tmp_path / "srv.key", tmp_path / "srv.crt"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(crt), "-days", "1",
                        "-subj", "/CN=mailhop.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return key, crt


def test_tls_handshakes_counted(net, tmp_path):
    """One good STARTTLS and one that fails (garbage instead of a
    ClientHello) are counted as inbound ok and failed."""
    import ssl
    key, crt = self_signed(tmp_path)
    m = net.relay(tls_cert_file=crt, tls_key_file=key)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = smtplib.SMTP("127.0.0.1", m.port, timeout=10)
    s.ehlo("client.example")
    s.starttls(context=ctx)
    assert s.ehlo("client.example")[0] == 250
    s.quit()
    c = Raw(m.port)
    c.reply()
    c.cmd("EHLO client.example")
    assert c.cmd("STARTTLS")[0] == 220
    c.send(b"this is not a TLS ClientHello\r\n" * 4)
    assert c.closed(10)
    c.close()
    series = 'mailhop_tls_handshakes_total{direction="inbound",result="%s"}'
    wait(lambda: scrape(m)[series % "failed"] == 1, what="failed handshake")
    s_ = scrape(m)
    assert s_[series % "ok"] == 1
    assert s_['mailhop_tls_handshakes_total{direction="outbound",'
              'result="ok"}'] == 0


def test_expired_recipients_counted(net):
    """A recipient deferred past queue_lifetime bounces with 4.4.7: counted
    as bounced (as in status) and as expired."""
    net.records({"slow.test": [("MX", "10 mx.slow.test", 60)],
                 "mx.slow.test": [("A", "127.0.0.3", 60)]})
    net.sink("127.0.0.3", rcpt_reply=lambda addr, n: "451 4.7.1 later")
    m = net.relay(retry_schedule="1s", queue_lifetime="3s")
    send(m, "a@src.test", ["x@slow.test"])
    wait(lambda: scrape(m)['mailhop_recipients_total{result="expired"}'] == 1,
         timeout=60, what="expiry")
    # The bounce itself goes on (and is dropped: src.test has no MX), so
    # the counters can move between a scrape and a status: compare a pair
    # taken while nothing moved.
    def agree():
        s, st, s2 = scrape(m), status(m), scrape(m)
        keys = ['mailhop_recipients_total{result="bounced"}',
                'mailhop_recipients_total{result="deferred"}']
        return all(s[k] == s2[k] for k in keys) and \
            s['mailhop_recipients_total{result="bounced"}'] == \
            st["counters"]["bounced"] >= 1 and \
            s['mailhop_recipients_total{result="deferred"}'] == \
            st["counters"]["deferred"] >= 1
    wait(agree, timeout=30, what="metrics and status agree")
    s = scrape(m)
    assert s["mailhop_delivery_duration_seconds_count"] == 0


def test_readyz_503_while_the_queue_disk_is_under_the_floor(net):
    """queue_minfree larger than any disk: the free-space monitor marks the
    disk low, /readyz answers 503 (and /healthz stays 200: a full disk is
    no reason to restart the pod), and MAIL FROM gets 452 4.3.1."""
    m = net.relay(queue_minfree="100000g")
    deadline = time.time() + 30
    while get(m.metrics_port, "/readyz")[0] != 503 and \
            time.time() < deadline:
        time.sleep(0.1)
    st, _, body = get(m.metrics_port, "/readyz")
    assert st == 503, body
    assert get(m.metrics_port, "/healthz")[0] == 200
    c = Raw(m.port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.example")[0] == 250
    code, text = c.cmd("MAIL FROM:<a@src.test>")
    assert code == 452 and "4.3.1" in text
    c.cmd("QUIT")
    c.close()
    # Said in the log: once when the floor is crossed, and per refusal.
    m.wait_log("reason=queue_minfree")
    assert "under queue_minfree" in m.log()
    assert m.stop() == 0


def test_one_client_cannot_starve_the_health_probe(net):
    """A client on one address holds 64 connections that trickle a header
    line every half second (slowloris, never idle long enough to be timed
    out): it gets at most 8 slots, and /healthz and /readyz from another
    address are answered meanwhile (a failed liveness probe would restart
    the pod).  Without the per-address cap the probes wait for as long as
    the trickle lasts."""
    import threading
    m = net.relay()
    conns = []
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.5):
            for s in conns:
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass
    t = threading.Thread(target=trickle)
    try:
        for _ in range(64):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", m.metrics_port))
                s.send(b"GET /metrics HTTP/1.1\r\n")
            except OSError:
                pass  # closed at once past the per-address cap: fine
            conns.append(s)
        t.start()
        for _ in range(3):
            assert get(m.metrics_port, "/healthz", timeout=8)[0] == 200
            assert get(m.metrics_port, "/readyz", timeout=8)[0] == 200
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        for s in conns:
            s.close()
    assert m.stop() == 0

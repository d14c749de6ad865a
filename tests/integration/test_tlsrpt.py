"""TLS-RPT (RFC 8460, CONTRACT §4b) with real parts on loopback: sessions
to domains with an enforced MTA-STS policy (one good, one whose MX does
not match) and to one without a policy are counted; with a short
tls_rpt_interval the reports reach the rua mailbox (an SMTP sink, by MX
through the relay itself), decompress, parse, and their counts match the
sessions; report mail itself is never counted; counts survive a restart
and `mailhop tlsrpt` shows them."""
import email
import email.policy
import gzip
import json

from stsfix import (dns, policy, sink, spki, sts_conf, txt,  # noqa: F401
                    wait_until, web, zone)
from test_tls import finish, submit

RUA = "v=TLSRPTv1; rua=mailto:reports@rua.test"


def rpt_zone():
    return zone(**{
        "_mta-sts.enf.test": txt("v=STSv1; id=e1"),
        "_mta-sts.bad.test": txt("v=STSv1; id=b1"),
        "_smtp._tls.enf.test": txt(RUA),
        "_smtp._tls.bad.test": txt(RUA),
        "_smtp._tls.plain.test": txt(RUA),
        "_smtp._tls.rua.test": txt(RUA),
    })


def reports(sink):
    """(envelope, message, report JSON) of every report in the sink."""
    out = []
    for env, _tls in list(sink.messages):
        if "reports@rua.test" not in env.rcpt_tos:
            continue
        msg = email.message_from_bytes(env.original_content,
                                       policy=email.policy.default)
        for part in msg.walk():
            if part.get_content_type() == "application/tlsrpt+gzip":
                data = gzip.decompress(part.get_payload(decode=True))
                out.append((env, msg, json.loads(data)))
    return out


def totals(sink):
    """{(domain, policy-type): [successful, failed, {type: n}]} summed
    over every report received."""
    t = {}
    for _env, _msg, rep in reports(sink):
        for p in rep["policies"]:
            key = (p["policy"]["policy-domain"], p["policy"]["policy-type"])
            e = t.setdefault(key, [0, 0, {}])
            e[0] += p["summary"]["total-successful-session-count"]
            e[1] += p["summary"]["total-failure-session-count"]
            for f in p.get("failure-details", []):
                e[2][f["result-type"]] = e[2].get(f["result-type"], 0) + \
                    f["failed-session-count"]
    return t


def tlsrpt_json(m):
    r = m.cli("tlsrpt", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_reports_arrive_and_match_the_sessions(mailhop, spki, dns, web,
                                               sink):
    dns.set_records(rpt_zone())
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    web.policies["bad.test"] = policy("enforce", "mx.other.test")
    m = mailhop(**sts_conf(spki, dns, web, sink, tls_rpt="yes",
                           tls_rpt_interval="2s"))
    submit(m, "bob@enf.test")
    submit(m, "bob@bad.test")
    submit(m, "bob@plain.test")
    want = {("enf.test", "sts"): [1, 0, {}],
            ("bad.test", "sts"): [0, 1, {"validation-failure": 1}],
            ("plain.test", "no-policy-found"): [1, 0, {}]}
    wait_until(lambda: all(totals(sink).get(k) == v
                           for k, v in want.items()), timeout=60)
    got = totals(sink)
    assert {k: v for k, v in got.items() if k in want} == want
    # Never a report about report mail (deliveries to rua.test).
    assert not any(d == "rua.test" for d, _p in got)
    for env, msg, rep in reports(sink):
        assert env.mail_from in ("", "<>")
        assert msg["From"] == "MAILER-DAEMON@mailhop.test"
        assert msg["TLS-Report-Submitter"] == "mailhop.test"
        dom = msg["TLS-Report-Domain"]
        assert {p["policy"]["policy-domain"] for p in rep["policies"]} == \
            {dom}
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "tlsrpt"
        assert rep["organization-name"] == "mailhop.test"
        assert rep["date-range"]["start-datetime"] <= \
            rep["date-range"]["end-datetime"]
        for p in rep["policies"]:
            if p["policy"]["policy-type"] == "sts":
                # the policy in force, line by line (RFC 8460 §4.4)
                assert p["policy"]["policy-string"][:2] == \
                    ["version: STSv1", "mode: enforce"], p
    # The report mail went out through the relay: delivered and gone.
    wait_until(lambda: not [
        msg for msg in json.loads(m.cli("queue", "--json").stdout)
        ["messages"] if msg["sender"] == ""] or None)
    assert not any(e["domain"] == "rua.test"
                   for e in tlsrpt_json(m)["domains"])
    finish(m)


def test_counts_survive_a_restart_and_tlsrpt_shows_them(mailhop, spki, dns,
                                                         web, sink):
    dns.set_records(rpt_zone())
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    web.policies["bad.test"] = policy("enforce", "mx.other.test")
    m = mailhop(**sts_conf(spki, dns, web, sink, tls_rpt="yes",
                           tls_rpt_interval="1h"))
    submit(m, "bob@enf.test")
    submit(m, "bob@bad.test")
    m.wait_log("event=delivered")
    m.wait_log("dsn=4.7.5")

    def counts():
        j = tlsrpt_json(m)
        return {(e["domain"], e["policy"]): (e["successful"], e["failed"],
                                             e["failures"])
                for e in j["domains"]}, j["period_start"]

    want = {("enf.test", "sts"): (1, 0, {}),
            ("bad.test", "sts"): (0, 1, {"validation-failure": 1})}
    wait_until(lambda: counts()[0] == want)
    before = counts()
    finish(m)
    m.start()
    assert counts() == before
    table = m.cli("tlsrpt")
    assert table.returncode == 0, table.stderr
    assert "enf.test" in table.stdout and "validation-failure=1" in \
        table.stdout, table.stdout
    finish(m)


def test_period_start_without_reports(mailhop):
    """tls_rpt = no: the counts still run, and `tlsrpt` dates them from
    the start, not from 1970 (a black-box run saw 1970-01-01)."""
    import time
    m = mailhop(tls_rpt="no")
    start = tlsrpt_json(m)["period_start"]
    assert start >= time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                  time.gmtime(time.time() - 120)), start

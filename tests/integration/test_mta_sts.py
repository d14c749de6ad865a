"""MTA-STS (RFC 8461, CONTRACT §4b) against real parts on loopback: the
`_mta-sts` TXT record from a dnslib server, the policy from a python HTTPS
server whose certificate (for mta-sts.DOMAIN) comes from a test CA given
by tls_ca_file, and a STARTTLS SMTP sink (aiosmtpd) holding a certificate
for the MX hosts.

- enforce with a matching MX: delivered over verified TLS, tls_policy=sts;
- enforce with no matching MX: deferred 4.7.5, never connected;
- testing: delivered as without a policy;
- a changed id is fetched again, the same id is not;
- a refetch that fails keeps the cached policy in use;
- a policy past half its max_age is refreshed behind the deliveries, which
  go on under the cached one meanwhile;
- a policy over 64 KiB, one not served as text/plain and a redirect are
  no policy;
- a policy server that hangs holds up only its own domain."""
import json

from stsfix import (delivered_to, dns, policy, sink, spki, sts_conf,  # noqa
                    txt, wait_until, web, zone)
from test_tls import finish, submit


def delivered_lines(m, rcpt):
    return [line for line in m.log().splitlines()
            if "event=delivered" in line and f"rcpt=<{rcpt}>" in line]


def deferred_lines(m, rcpt):
    return [line for line in m.log().splitlines()
            if "event=deferred" in line and f"rcpt=<{rcpt}>" in line]


def rcpt_state(m, rcpt):
    r = m.cli("queue", "--json")
    assert r.returncode == 0, r.stderr
    for msg in json.loads(r.stdout)["messages"]:
        for rc in msg["recipients"]:
            if rc["address"] == rcpt:
                return rc
    return None


def test_enforce_matching_mx_delivers_over_verified_tls(mailhop, spki, dns,
                                                        web, sink):
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=1;")}))
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "bob@enf.test")
    wait_until(lambda: delivered_lines(m, "bob@enf.test"))
    (line,) = delivered_lines(m, "bob@enf.test")
    assert "tls_policy=sts" in line and "tls=TLSv1" in line, line
    (env,) = delivered_to(sink, "bob@enf.test")
    assert [tls for e, tls in sink.messages] == [True]
    # The policy is kept in the queue database.
    with m.db() as db:
        rows = db.execute("SELECT domain, id FROM sts_policies").fetchall()
    assert rows == [("enf.test", "1")]
    finish(m)


def test_enforce_no_matching_mx_defers_475(mailhop, spki, dns, web, sink):
    dns.set_records(zone(**{"_mta-sts.bad.test": txt("v=STSv1; id=7")}))
    web.policies["bad.test"] = policy("enforce", "mx.elsewhere.test",
                                      "*.other.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "bob@bad.test")
    rc = wait_until(lambda: (s := rcpt_state(m, "bob@bad.test")) and
                    s["state"] == "deferred" and s)
    assert "MTA-STS" in rc["last_error"], rc
    (line,) = wait_until(lambda: deferred_lines(m, "bob@bad.test"))
    assert "dsn=4.7.5" in line, line
    assert sink.messages == []
    finish(m)


def test_enforce_wildcard_and_untrusted_tls(mailhop, spki, dns, web, sink):
    """mx: *.enf.test matches mx.enf.test; with the CA not given the
    certificate does not verify, and enforce defers (4.7.5) instead of
    delivering or falling back to plaintext."""
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=w1")}))
    web.policies["enf.test"] = policy("enforce", "*.enf.test")
    conf = sts_conf(spki, dns, web, sink)
    m = mailhop(**conf)
    submit(m, "carol@enf.test")
    wait_until(lambda: delivered_lines(m, "carol@enf.test"))
    finish(m)
    # The same with a CA that does not vouch for the sink: the policy is
    # cached (no fetch needed), the SMTP certificate fails.
    import shutil
    other = m.dir / "other-ca.crt"
    shutil.copy(spki.path("web.crt"), other)  # not a CA for mx certs
    m.conf["tls_ca_file"] = str(other)
    m.start()
    submit(m, "dave@enf.test")
    (line,) = wait_until(lambda: deferred_lines(m, "dave@enf.test"))
    assert "dsn=4.7.5" in line, line
    assert not delivered_to(sink, "dave@enf.test")
    finish(m)


def test_testing_mode_delivers_as_without_policy(mailhop, spki, dns, web,
                                                 sink):
    dns.set_records(zone(**{"_mta-sts.tst.test": txt("v=STSv1; id=t1")}))
    web.policies["tst.test"] = policy("testing", "mx.nowhere.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "bob@tst.test")
    wait_until(lambda: delivered_lines(m, "bob@tst.test"))
    (line,) = delivered_lines(m, "bob@tst.test")
    assert "tls_policy=none" in line, line
    assert web.hit("tst.test") == 1
    finish(m)


def test_changed_id_refetches_same_id_does_not(mailhop, spki, dns, web,
                                               sink):
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=a1")}))
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "one@enf.test")
    wait_until(lambda: delivered_lines(m, "one@enf.test"))
    submit(m, "two@enf.test")
    wait_until(lambda: delivered_lines(m, "two@enf.test"))
    assert web.hit("enf.test") == 1
    # A new id: fetched again, and the new policy applies (mx2 only).
    web.policies["enf.test"] = policy("enforce", "mx2.enf.test")
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=a2")}))
    submit(m, "three@enf.test")
    (line,) = wait_until(lambda: deferred_lines(m, "three@enf.test"))
    assert "dsn=4.7.5" in line, line
    assert web.hit("enf.test") == 2
    with m.db() as db:
        assert db.execute("SELECT id FROM sts_policies WHERE domain ="
                          " 'enf.test'").fetchall() == [("a2",)]
    finish(m)


def test_failed_refetch_keeps_cached_policy(mailhop, spki, dns, web, sink):
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=c1")}))
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "one@enf.test")
    wait_until(lambda: delivered_lines(m, "one@enf.test"))
    finish(m)
    # After a restart (the policy comes from the queue database) the id
    # changes but the policy server fails: the cached policy still rules.
    web.policies["enf.test"] = ("status", 500)
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=c2")}))
    m.start()
    submit(m, "two@enf.test")
    wait_until(lambda: delivered_lines(m, "two@enf.test"))
    (line,) = delivered_lines(m, "two@enf.test")
    assert "tls_policy=sts" in line, line
    assert "the cached policy stays in use" in m.log()
    assert web.hit("enf.test") == 2
    finish(m)


def test_policy_past_half_its_life_refreshed_behind_deliveries(
        mailhop, spki, dns, web, sink):
    """RFC 8461 §10.2: refresh before expiry.  Once half its max_age is
    over, the next use fetches the policy again; the deliveries meanwhile
    go on under the cached policy instead of waiting for the fetch."""
    import time
    dns.set_records(zone(**{"_mta-sts.enf.test": txt("v=STSv1; id=f1")}))
    web.policies["enf.test"] = policy("enforce", "mx.enf.test", max_age=12)
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "one@enf.test")
    wait_until(lambda: delivered_lines(m, "one@enf.test"))
    fetched = time.time()
    # Young: the same id is not fetched again.
    submit(m, "two@enf.test")
    wait_until(lambda: delivered_lines(m, "two@enf.test"))
    assert web.hit("enf.test") == 1
    # Past half its life (6 s): the refetch hangs, the mail does not (and
    # the cached policy has 5 s to go: it answers).
    web.policies["enf.test"] = ("slow", policy("enforce", "mx.enf.test",
                                               max_age=600))
    time.sleep(max(0.0, fetched + 6.5 - time.time()))
    for rcpt in ("three@enf.test", "four@enf.test"):
        submit(m, rcpt)
        wait_until(lambda: delivered_lines(m, rcpt))
        (line,) = delivered_lines(m, rcpt)
        assert "tls_policy=sts" in line, line
    assert web.hit("enf.test") == 2  # one refresh, not one per delivery
    assert "refreshing the policy of enf.test" in m.log()
    # The refreshed policy (max_age 600) replaces the cached one.
    web.release_ev.set()

    def stored_max_age():
        with m.db() as db:
            row = db.execute("SELECT expires_at - fetched_at FROM"
                             " sts_policies WHERE domain = 'enf.test'"
                             ).fetchone()
        return row and row[0] == 600
    wait_until(stored_max_age)
    finish(m)


def test_policy_over_64k_is_no_policy(mailhop, spki, dns, web, sink):
    dns.set_records(zone(**{"_mta-sts.big.test": txt("v=STSv1; id=b1")}))
    big = policy("enforce", "mx.nowhere.test") + "x-pad: " + \
        "y" * (70 * 1024) + "\r\n"
    web.policies["big.test"] = big
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "bob@big.test")
    wait_until(lambda: delivered_lines(m, "bob@big.test"))
    (line,) = delivered_lines(m, "bob@big.test")
    assert "tls_policy=none" in line, line
    assert "larger than 65536 bytes" in m.log()
    finish(m)


def test_policy_not_served_as_text_plain_is_no_policy(mailhop, spki, dns,
                                                      web, sink):
    """RFC 8461 §3.2: senders SHOULD check the media type is text/plain
    (an HTML page or an upload at that path is not a policy); parameters
    such as charset are ignored, and case does not matter."""
    dns.set_records(zone(**{"_mta-sts.bad.test": txt("v=STSv1; id=h1"),
                            "_mta-sts.tst.test": txt("v=STSv1; id=n1"),
                            "_mta-sts.enf.test": txt("v=STSv1; id=p1")}))
    # Both would defer (no MX matches) if they were taken as policies.
    web.policies["bad.test"] = ("type", "text/html; charset=utf-8",
                                policy("enforce", "mx.nowhere.test"))
    web.policies["tst.test"] = ("type", None,
                                policy("enforce", "mx.nowhere.test"))
    web.policies["enf.test"] = ("type", "Text/Plain; charset=UTF-8",
                                policy("enforce", "mx.enf.test"))
    m = mailhop(**sts_conf(spki, dns, web, sink))
    for rcpt in ("bob@bad.test", "bob@tst.test", "bob@enf.test"):
        submit(m, rcpt)
    for rcpt, want in (("bob@bad.test", "tls_policy=none"),
                       ("bob@tst.test", "tls_policy=none"),
                       ("bob@enf.test", "tls_policy=sts")):
        wait_until(lambda: delivered_lines(m, rcpt))
        (line,) = delivered_lines(m, rcpt)
        assert want in line, line
    log = m.log()
    assert "policy of bad.test is invalid: served as text/html; " \
           "charset=utf-8, not text/plain" in log, log
    assert "policy of tst.test is invalid: served as (no Content-Type)" \
        in log, log
    finish(m)


def test_redirect_is_not_followed(mailhop, spki, dns, web, sink):
    dns.set_records(zone(**{"_mta-sts.redir.test": txt("v=STSv1; id=r1"),
                            "_mta-sts.enf.test": txt("v=STSv1; id=r1")}))
    web.policies["enf.test"] = policy("enforce", "mx.nowhere.test")
    web.policies["redir.test"] = (
        "redirect", f"https://mta-sts.enf.test:{web.port}"
                    "/.well-known/mta-sts.txt")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "bob@redir.test")
    wait_until(lambda: delivered_lines(m, "bob@redir.test"))
    (line,) = delivered_lines(m, "bob@redir.test")
    assert "tls_policy=none" in line, line
    assert "HTTP status 301" in m.log()
    assert web.hit("enf.test") == 0  # the Location was never asked
    finish(m)


def test_slow_policy_server_holds_only_its_domain(mailhop, spki, dns, web,
                                                  sink):
    dns.set_records(zone(**{"_mta-sts.slow.test": txt("v=STSv1; id=s1"),
                            "_mta-sts.enf.test": txt("v=STSv1; id=s1")}))
    web.policies["slow.test"] = ("slow", policy("enforce", "mx.slow.test"))
    web.policies["enf.test"] = policy("enforce", "mx.enf.test")
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "first@slow.test")
    wait_until(lambda: web.hit("slow.test") == 1)
    # The fetch hangs; other destinations (with and without a policy of
    # their own) flow meanwhile.
    submit(m, "bob@plain.test")
    submit(m, "bob@enf.test")
    wait_until(lambda: delivered_lines(m, "bob@plain.test"))
    wait_until(lambda: delivered_lines(m, "bob@enf.test"))
    assert not delivered_to(sink, "first@slow.test")
    assert rcpt_state(m, "first@slow.test")["state"] in ("queued",
                                                        "delivering")
    # Released: the policy arrives and the waiting mail goes, enforced.
    web.release_ev.set()
    wait_until(lambda: delivered_lines(m, "first@slow.test"))
    (line,) = delivered_lines(m, "first@slow.test")
    assert "tls_policy=sts" in line, line
    finish(m)


def test_shutdown_while_a_fetch_hangs(mailhop, spki, dns, web, sink):
    dns.set_records(zone(**{"_mta-sts.slow.test": txt("v=STSv1; id=h1")}))
    web.policies["slow.test"] = ("slow", policy("enforce", "mx.slow.test"))
    m = mailhop(**sts_conf(spki, dns, web, sink))
    submit(m, "first@slow.test")
    wait_until(lambda: web.hit("slow.test") == 1)
    finish(m)  # exits 0 at once: the fetch is aborted, the mail stays
    with m.db() as db:
        assert db.execute("SELECT count(*) FROM recipients WHERE"
                          " address = 'first@slow.test' AND state < 2"
                          ).fetchone()[0] == 1

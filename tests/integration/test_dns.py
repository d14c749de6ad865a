"""`mailhop resolve` against a loopback DNS server (issue 4).

The binary comes from MAILHOP_BIN (default <repo>/build/mailhop); when it
is missing every test fails (conftest), none is skipped.  Every
test starts its own DNS server(s) on free loopback ports.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnsserver import DNSServer  # noqa: E402

from conftest import BIN  # noqa: E402  (a missing binary fails there)

RECORDS = {
    "a.test": [("MX", "10 mx1.a.test", 300), ("MX", "20 mx2.a.test", 300)],
    "mx1.a.test": [("A", "127.0.0.2", 300)],
    "mx2.a.test": [("A", "127.0.0.3", 300)],
    "eq.test": [("MX", "10 mxa.eq.test", 300), ("MX", "10 mxb.eq.test", 300)],
    "mxa.eq.test": [("A", "127.0.0.10", 300)],
    "mxb.eq.test": [("A", "127.0.0.11", 300)],
    "implicit.test": [("A", "127.0.0.4", 300)],
    "nullmx.test": [("MX", "0 .", 300)],
    "sf.test": [("MX", "10 mx1.a.test", 300)],
    "refused.test": [("MX", "10 mx1.a.test", 300)],
    "slow.test": [("MX", "10 mx1.a.test", 300)],
    "tc.test": [("MX", "10 mx1.a.test", 300)],
    "v6.test": [("MX", "10 mx.v6.test", 300)],
    "mx.v6.test": [("A", "127.0.0.7", 300), ("AAAA", "::1", 300)],
    "cn.test": [("MX", "10 alias.cn.test", 300)],
    "alias.cn.test": [("CNAME", "real.cn.test", 300)],
    "real.cn.test": [("A", "127.0.0.8", 300)],
    "cnmx.test": [("CNAME", "a.test", 300)],
    "xn--bcher-kva.test": [("MX", "10 mx1.a.test", 300)],
    "spoofid.test": [("MX", "10 mx1.a.test", 300)],
    "spoofaddr.test": [("MX", "10 mx1.a.test", 300)],
    "loop.test": [("MX", "10 self.loop.test", 300)],
    "self.loop.test": [("A", "127.0.0.1", 300)],
    "backup.test": [("MX", "10 mx1.a.test", 300), ("MX", "20 self.loop.test", 300)],
    "noaddr.test": [("MX", "10 gone.noaddr.test", 300)],
    "iplit.test": [("MX", "10 127.0.0.12", 300)],
    "many.test": [("MX", "10 m%d.many.test" % i, 300) for i in range(8)],
}
for i in range(8):
    RECORDS["m%d.many.test" % i] = [("A", "127.0.1.%d" % (i + 1), 300)]

BEHAVIOURS = {
    "sf.test": "servfail",
    "refused.test": "refused",
    "tc.test": "truncate",
    "spoofid.test": "wrong_id",
    "spoofaddr.test": "wrong_addr",
}


@pytest.fixture
def dns():
    with DNSServer(RECORDS, BEHAVIOURS) as srv:
        yield srv


def resolve(domain, servers, *opts, timeout="2s"):
    if not isinstance(servers, (list, tuple)):
        servers = [servers]
    cmd = [BIN, "resolve", domain,
           "-o", "dns_servers=" + ",".join(s.address for s in servers),
           "-o", "dns_timeout=" + timeout,
           "-o", "smtp_port=2525",
           "-o", "listen=127.0.0.1:2525"]
    for o in opts:
        cmd += ["-o", o]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILHOP_")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    return p.returncode, p.stdout.splitlines(), p.stderr


def test_mx_preference_order(dns):
    rc, out, err = resolve("a.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10",
                   "mx2.a.test[127.0.0.3]:2525 pref=20"]


def test_equal_preference_shuffled(dns):
    seen = set()
    for _ in range(40):
        rc, out, err = resolve("eq.test", dns)
        assert rc == 0, err
        assert len(out) == 2
        seen.add(tuple(line.split("[")[0] for line in out))
        if len(seen) == 2:
            break
    assert seen == {("mxa.eq.test", "mxb.eq.test"),
                    ("mxb.eq.test", "mxa.eq.test")}


def test_implicit_mx(dns):
    rc, out, err = resolve("implicit.test", dns)
    assert rc == 0, err
    assert out == ["implicit.test[127.0.0.4]:2525 pref=0"]


def test_null_mx_is_permanent(dns):
    rc, out, err = resolve("nullmx.test", dns)
    assert rc == 2 and out == []
    assert "permanent" in err and "5.1.10" in err


def test_nxdomain_is_permanent(dns):
    rc, out, err = resolve("nowhere.test", dns)
    assert rc == 2
    assert "permanent" in err and "5.1.2" in err


def test_servfail_is_temporary(dns):
    rc, out, err = resolve("sf.test", dns)
    assert rc == 2
    assert "temporary" in err and "4.4.3" in err and "SERVFAIL" in err


def test_refused_is_temporary(dns):
    rc, out, err = resolve("refused.test", dns)
    assert rc == 2
    assert "temporary" in err and "REFUSED" in err


def test_timeout_is_temporary(dns):
    dns.set_behaviour("slow.test", "drop")
    rc, out, err = resolve("slow.test", dns, timeout="1s")
    assert rc == 2
    assert "temporary" in err and "timeout" in err


def test_timeout_then_second_server(dns):
    with DNSServer(RECORDS, {"a.test": "drop"}) as dead:
        rc, out, err = resolve("a.test", [dead, dns], timeout="1s")
    assert rc == 0, err
    assert out[0] == "mx1.a.test[127.0.0.2]:2525 pref=10"
    assert dead.queries("a.test", "MX")
    assert dns.queries("a.test", "MX")


def test_truncated_answer_retried_over_tcp(dns):
    rc, out, err = resolve("tc.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10"]
    protos = [q[0] for q in dns.queries("tc.test", "MX")]
    assert protos == ["udp", "tcp"]


def test_aaaa_and_a(dns):
    rc, out, err = resolve("v6.test", dns)
    assert rc == 0, err
    assert out == ["mx.v6.test[::1]:2525 pref=10",
                   "mx.v6.test[127.0.0.7]:2525 pref=10"]


def test_cname_followed_by_server(dns):
    rc, out, err = resolve("cn.test", dns)
    assert rc == 0, err
    assert out == ["alias.cn.test[127.0.0.8]:2525 pref=10"]


def test_cname_followed_by_client():
    with DNSServer(RECORDS, follow_cname=False) as srv:
        rc, out, err = resolve("cn.test", srv)
        assert rc == 0, err
        assert out == ["alias.cn.test[127.0.0.8]:2525 pref=10"]
        assert srv.queries("real.cn.test", "A")
        rc, out, err = resolve("cnmx.test", srv)
        assert rc == 0, err
        assert out[0] == "mx1.a.test[127.0.0.2]:2525 pref=10"


def test_cname_loop_is_bounded():
    recs = {"l1.test": [("CNAME", "l2.test", 300)],
            "l2.test": [("CNAME", "l1.test", 300)]}
    with DNSServer(recs, follow_cname=False) as srv:
        rc, out, err = resolve("l1.test", srv)
    assert rc == 2
    assert "CNAME" in err


def test_utf8_domain_as_a_label(dns):
    rc, out, err = resolve("bücher.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10"]
    assert dns.queries("xn--bcher-kva.test", "MX")


def test_answer_with_wrong_id_ignored(dns):
    rc, out, err = resolve("spoofid.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10"]


def test_answer_from_wrong_address_ignored(dns):
    rc, out, err = resolve("spoofaddr.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10"]


def test_best_mx_is_self_is_a_loop(dns):
    rc, out, err = resolve("loop.test", dns)
    assert rc == 2
    assert "5.4.6" in err and "loops back to myself" in err


def test_backup_mx_self_keeps_better_ones(dns):
    rc, out, err = resolve("backup.test", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:2525 pref=10"]


def test_self_address_on_other_port_is_no_loop(dns):
    rc, out, err = resolve("loop.test", dns, "listen=127.0.0.1:2600")
    assert rc == 0, err
    assert out == ["self.loop.test[127.0.0.1]:2525 pref=10"]


def test_mx_host_without_address(dns):
    rc, out, err = resolve("noaddr.test", dns)
    assert rc == 2
    assert "permanent" in err and "5.4.4" in err


def test_mx_ip_literal_accepted(dns):
    rc, out, err = resolve("iplit.test", dns)
    assert rc == 0, err
    assert out == ["127.0.0.12[127.0.0.12]:2525 pref=10"]


def test_address_cap_of_five(dns):
    rc, out, err = resolve("many.test", dns)
    assert rc == 0, err
    assert len(out) == 5


def test_bracketed_host_has_no_mx_lookup(dns):
    rc, out, err = resolve("[mx1.a.test]:587", dns)
    assert rc == 0, err
    assert out == ["mx1.a.test[127.0.0.2]:587 pref=0"]
    assert not dns.queries("mx1.a.test", "MX")


def test_ip_literal_needs_no_query(dns):
    rc, out, err = resolve("[127.0.0.9]", dns)
    assert rc == 0, err
    assert out == ["[127.0.0.9][127.0.0.9]:2525 pref=0"]
    assert dns.queries() == []

"""The command line and configuration (CONTRACT §1, §2), black-box."""
import os
import signal
import socket
import subprocess
import time

from conftest import BIN, Mailhop, clean_env, free_port, run


def check_output(*args, env=None):
    r = run("check", *args, env=env)
    assert r.returncode == 0, r.stderr
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines())


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("mailhop ")
    r = run("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "resolve" in r.stdout


def test_unknown_command_and_option():
    assert run("frobnicate").returncode == 1
    r = run("check", "--bogus")
    assert r.returncode == 1 and "--bogus" in r.stderr


def test_check_prints_every_key_with_defaults():
    out = check_output()
    assert out["listen"] == "127.0.0.1:2525"
    assert out["queue_path"] == "./mailhop-queue.db"
    assert out["admin_socket"] == "./mailhop.sock"
    assert out["relay_networks"] == "127.0.0.0/8, ::1/128"
    assert out["max_message_size"] == "25m"
    assert out["retry_schedule"] == "1m,5m,15m,30m,1h,2h,4h"
    assert out["relayhost_auth"] == "auto"
    assert out["metrics_listen"] == ""
    assert out["queue_minfree"] == "100m"
    assert len(out) == 58


def test_precedence_file_env_file_secret_override(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("max_sessions = 10\nmax_recipients = 11\n"
                    "max_outbound = 12\nsmtp_port = 2526\n")
    secret = tmp_path / "hostname"
    secret.write_text("from-file.example\n")
    env = {"MAILHOP_MAX_RECIPIENTS": "21", "MAILHOP_MAX_OUTBOUND": "22",
           "MAILHOP_HOSTNAME_FILE": str(secret)}
    out = check_output("-c", str(conf), "-o", "max_outbound=32", env=env)
    assert out["max_sessions"] == "10"
    assert out["max_recipients"] == "21"
    assert out["max_outbound"] == "32"
    assert out["smtp_port"] == "2526"
    assert out["hostname"] == "from-file.example"


def test_options_anywhere_after_command(tmp_path):
    r = run("check", "-o", "max_sessions=5")
    assert r.returncode == 0 and "max_sessions = 5\n" in r.stdout


def test_secrets_hidden(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    env = {"MAILHOP_RELAYHOST": "[smtp.example]:587",
           "MAILHOP_RELAYHOST_USER": "u",
           "MAILHOP_RELAYHOST_PASSWORD_FILE": str(pw)}
    r = run("check", env=env)
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    r = run("check", "-o", "relayhost=[smtp.example]:587", "-o",
            "relayhost_user=u", "-o", "relayhost_password=hunter2")
    assert r.returncode == 0
    assert "relayhost_password = <set>" in r.stdout
    assert "hunter2" not in r.stdout + r.stderr


def test_unknown_env_only_warns():
    r = run("check", env={"MAILHOP_PORT": "tcp://10.0.0.1:25"})
    assert r.returncode == 0
    assert "MAILHOP_PORT" in r.stderr


def test_env_and_env_file_both_set_is_error(tmp_path):
    f = tmp_path / "h"
    f.write_text("a.example\n")
    r = run("check", env={"MAILHOP_HOSTNAME": "b.example",
                          "MAILHOP_HOSTNAME_FILE": str(f)})
    assert r.returncode == 1 and "hostname" in r.stderr


def test_bad_values_file_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("# ok\nmax_sessions = 3\nsmtp_timeout = soon\n")
    r = run("check", "-c", str(conf))
    assert r.returncode == 1
    assert r.stderr.strip().startswith(f"{conf}:3: smtp_timeout")
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_values_env_and_override():
    r = run("check", env={"MAILHOP_MAX_SESSIONS": "many"})
    assert r.returncode == 1 and r.stderr.startswith("max_sessions:")
    r = run("check", "-o", "listen=localhost:25")
    assert r.returncode == 1 and r.stderr.startswith("listen:")
    r = run("check", "-o", "no_such_key=1")
    assert r.returncode == 1 and "no_such_key" in r.stderr


def test_missing_config_file_is_exit_1(tmp_path):
    r = run("check", "-c", str(tmp_path / "nope.conf"))
    assert r.returncode == 1 and "nope.conf" in r.stderr


def test_files_the_configuration_names_are_checked(tmp_path):
    """check reads the files serve will use, so what it passes, serve
    starts with; each mistake is one line naming the key, exit 1, from
    both (a bad tls_ca_file used to pass check and make serve exit 2)."""
    from test_tls import _make_ca, _make_leaf
    _make_ca(tmp_path, "ca")
    _make_leaf(tmp_path, "server", "ca", "DNS:relay.test")
    _make_leaf(tmp_path, "other", "ca", "DNS:relay.test")
    users = tmp_path / "users"
    hashed = subprocess.run(["openssl", "passwd", "-6", "-salt", "s4lt",
                             "secret"], capture_output=True, text=True,
                            check=True).stdout.strip()
    users.write_text(f"alice:{hashed}\n")
    bad_users = tmp_path / "bad-users"
    bad_users.write_text("no colon here\n")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    nope = str(tmp_path / "nope")
    cert, key = str(tmp_path / "server.crt"), str(tmp_path / "server.key")
    good = ["-o", f"tls_cert_file={cert}", "-o", f"tls_key_file={key}",
            "-o", f"tls_ca_file={tmp_path / 'ca.crt'}",
            "-o", f"auth_users_file={users}"]
    r = run("check", "-o", "hostname=relay.test", *good)
    assert r.returncode == 0, r.stderr
    cases = [
        (["-o", f"tls_cert_file={nope}", "-o", f"tls_key_file={key}"],
         "tls_cert_file"),
        (["-o", f"tls_cert_file={cert}", "-o", f"tls_key_file={nope}"],
         "tls_key_file"),
        (["-o", f"tls_cert_file={cert}",
          "-o", f"tls_key_file={tmp_path / 'other.key'}"], "tls_key_file"),
        (["-o", f"tls_ca_file={nope}"], "tls_ca_file"),
        (["-o", f"tls_ca_file={junk}"], "tls_ca_file"),
        (["-o", f"auth_users_file={nope}"], "nope"),
        (["-o", f"auth_users_file={bad_users}"], "bad-users:1"),
    ]
    for args, word in cases:
        r = run("check", "-o", "hostname=relay.test", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert word in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        m = Mailhop(tmp_path)
        for a in args[1::2]:
            k, v = a.split("=", 1)
            m.conf[k] = v
        m.start(wait=False)
        rc = m.proc.wait(20)
        m.kill()
        assert rc == 1, (args, m.log())
        assert word in m.log(), (args, m.log())


def test_admin_usage_errors_are_one_line_exit_1(tmp_path):
    """Each mistake on the command line of an admin command is one line
    naming it, exit 1, before the socket is tried (a black-box run found
    two-line usage dumps, the daemon's own drain syntax, and a bad --state
    answered by the daemon with exit 2)."""
    sock = str(tmp_path / "none.sock")  # nothing listens: never reached
    cases = [
        (["queue", "delete"], "needs an ID"),
        (["queue", "--older-than", "1x"], "--older-than"),
        (["queue", "--state", "bogus"], "state"),
        (["queue", "show"], "usage: mailhop queue"),
        (["queue", "delete", "abc", "--all"], "not both"),
        (["suspend", "x.test", "--for", "1x"], "--for"),
        (["suspend"], "usage: mailhop suspend"),
        (["drain", "--timeout", "abc"], "--timeout"),
        (["drain", "--to", "nohostport"], "HOST:PORT"),
        (["status", "extra"], "usage: mailhop status"),
        (["pause", "extra"], "usage: mailhop pause"),
        (["status", "--for", "1h"], "--for goes with suspend"),
        (["check", "extra"], "check takes no arguments"),
        (["check", "--explain", "a", "b"], "check takes no arguments"),
    ]
    for args, word in cases:
        r = run(*args, "-s", sock)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], (args, r.stderr)
        assert "admin socket" not in r.stderr, (args, r.stderr)
    # Given its socket, an admin command needs no configuration: a broken
    # MAILHOP_* variable does not stop it (here: no daemon, exit 2).
    r = run("status", "-s", sock, env={"MAILHOP_MAX_SESSIONS": "many"})
    assert r.returncode == 2 and "admin socket" in r.stderr, r.stderr


def test_contradictions():
    cases = [
        (["-o", "listen=0.0.0.0:2525"], "relay_networks"),
        (["-o", "listen_tls=127.0.0.1:4650"], "listen_tls"),
        (["-o", "relayhost=[r.example]:587", "-o", "relayhost_user=u", "-o",
          "relayhost_password=p", "-o", "relayhost_tls=none"],
         "relayhost_auth_plaintext"),
        (["-o", "relayhost=[r.example]:587", "-o", "relayhost_user=u", "-o",
          "relayhost_password=p", "-o", "relayhost_tls=opportunistic"],
         "relayhost_auth_plaintext"),
        (["-o", "admin_socket=/tmp/" + "s" * 110], "admin_socket"),
    ]
    for args, word in cases:
        r = run("check", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert word in r.stderr, (args, r.stderr)
    # relay_networks set explicitly, even to its default value, is enough.
    r = run("check", "-o", "listen=0.0.0.0:2525", "-o",
            "relay_networks=127.0.0.0/8, ::1/128")
    assert r.returncode == 0, r.stderr
    r = run("check", "-o", "listen=0.0.0.0:2525",
            env={"MAILHOP_RELAY_NETWORKS": "10.0.0.0/8"})
    assert r.returncode == 0, r.stderr


def test_serve_bind_failure_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        m = Mailhop(tmp_path, listen=f"127.0.0.1:{port}")
        m.start(wait=False)
        rc = m.proc.wait(20)
        m.kill()
    assert rc == 2
    err = [l for l in m.log().splitlines() if f"127.0.0.1:{port}" in l]
    assert err, m.log()


def test_serve_sigterm_and_sigint_exit_0(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT):
        m = Mailhop(tmp_path)
        m.start()
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as c:
            assert c.recv(512).startswith(b"220 ")
        assert m.stop(sig) == 0, m.log()
        assert "event=shutdown" in m.log()


def test_serve_with_no_configuration(tmp_path):
    """`serve` with no configuration works: 127.0.0.1:2525 and files in the
    working directory (skipped only if something else holds port 2525)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 2525))
        except OSError:
            import pytest
            pytest.skip("port 2525 is in use on this machine")
    p = subprocess.Popen([BIN, "serve"], cwd=tmp_path, env=clean_env(),
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", 2525), 1) as c:
                    assert c.recv(512).startswith(b"220 ")
                    break
            except ConnectionRefusedError:
                time.sleep(0.1)
        assert (tmp_path / "mailhop-queue.db").exists()
        assert (tmp_path / "mailhop.sock").exists()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0


def test_json_log_lines_parse(tmp_path):
    import json
    m = Mailhop(tmp_path, log_format="json")
    m.start()
    with socket.create_connection(("127.0.0.1", m.port), timeout=5) as c:
        c.recv(512)
        c.sendall(b"EHLO x\r\nMAIL FROM:<a@a.example>\r\n"
                  b"RCPT TO:<b\x1b[31m@b.example>\r\nQUIT\r\n")
        time.sleep(0.3)
    assert m.stop() == 0
    events = []
    for line in m.log().splitlines():
        obj = json.loads(line)  # every line is one JSON object
        assert "ts" in obj and "level" in obj and "event" in obj
        events.append(obj["event"])
    assert "listening" in events and "shutdown" in events


def test_logfmt_escapes_peer_text(tmp_path):
    m = Mailhop(tmp_path)
    m.start()
    with socket.create_connection(("127.0.0.1", m.port), timeout=5) as c:
        c.recv(512)
        c.sendall(b"EHLO evil\r\nMAIL FROM:<a@a.example>\r\n"
                  b"RCPT TO:<b@b.example>\r\nDATA\r\n")
        time.sleep(0.2)
        c.sendall(b"Subject: x\r\n\r\ny\r\n.\r\nQUIT\r\n")
        time.sleep(0.3)
    assert m.stop() == 0
    for line in m.log().splitlines():
        assert line.startswith("ts=") and " level=" in line


def test_example_config_is_valid():
    from conftest import ROOT
    r = run("check", "-c", str(ROOT / "config" / "mailhop.conf"))
    assert r.returncode == 0, r.stderr
    assert "hostname = relay.example.com" in r.stdout


def test_resolve_usage_errors_say_what_is_wrong():
    for args, want in ((["resolve"], "resolve takes one DOMAIN"),
                       (["resolve", "a.test", "b.test"],
                        "resolve takes one DOMAIN"),
                       (["resolve", "a.test", "--sender"],
                        "--sender needs an argument"),
                       (["serve", "x"], "serve takes no arguments")):
        r = run(*args)
        assert r.returncode == 1, args
        assert want in r.stderr and "unknown command" not in r.stderr, \
            (args, r.stderr)


def test_resolve_with_a_relayhost_names_it():
    """The relayhost is what mail takes: resolve says so rather than
    listing MX hosts that would never be used."""
    r = run("resolve", "a.test", "-o", "relayhost=[127.0.0.9]:2525",
            "-o", "dns_servers=127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["route = none", "target = [127.0.0.9]:2525"]
    assert lines[2].startswith("127.0.0.9[127.0.0.9]:2525")

"""The documentation shipped in the box (issue 22): `check --explain`, the
key descriptions against the binary's own key table, the worked examples
under config/examples/, and `--help` against mailhop(8)."""
import re

from conftest import ROOT, run

KEYS_TXT = ROOT / "docs" / "keys.txt"


def check_keys(*args, env=None):
    """The keys `mailhop check` prints, in order."""
    r = run("check", "-c", "/dev/null", *args, env=env)
    assert r.returncode == 0, r.stderr
    return [line.split(" = ", 1)[0] for line in r.stdout.splitlines()]


def described_keys():
    """(main, pending) key names of docs/keys.txt."""
    main, pending, cur = [], [], None
    cur = main
    for line in KEYS_TXT.read_text().splitlines():
        if re.fullmatch(r"\[\[pending: [^]]*\]\]", line.strip()):
            cur = pending
        m = re.fullmatch(r"\[([a-z0-9_]+)\]\s*", line)
        if m:
            cur.append(m.group(1))
    return main, pending


# ---- check --explain ----------------------------------------------------

def test_explain_prints_description_default_and_current():
    r = run("check", "--explain", "relay_networks",
            "-o", "relay_networks=10.0.0.0/8")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("relay_networks\n")
    assert "CIDR list" in out  # the description from docs/keys.txt
    assert re.search(r"default: +127\.0\.0\.0/8, ::1/128\n", out)
    assert re.search(r"current: +10\.0\.0\.0/8\n", out)
    assert "MAILHOP_RELAY_NETWORKS" in out


def test_explain_takes_the_current_value_from_every_source(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("max_recipients = 7\n")
    r = run("check", "--explain", "max_recipients", "-c", str(conf))
    assert re.search(r"current: +7\n", r.stdout), r.stdout
    r = run("check", "--explain", "max_recipients", "-c", str(conf),
            env={"MAILHOP_MAX_RECIPIENTS": "8"})
    assert re.search(r"current: +8\n", r.stdout), r.stdout
    # The environment variable's name works as the key's name.
    r = run("check", "--explain", "MAILHOP_MAX_RECIPIENTS")
    assert r.returncode == 0 and r.stdout.startswith("max_recipients\n")


def test_explain_hides_secrets(tmp_path):
    r = run("check", "--explain", "relayhost_password",
            "-o", "relayhost=[smtp.example]:587", "-o", "relayhost_user=u",
            "-o", "relayhost_password=hunter2")
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    assert re.search(r"current: +<set>\n", r.stdout)


def test_explain_unknown_key_suggests_the_near_one():
    r = run("check", "--explain", "relay_network")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "no key 'relay_network'" in r.stderr
    assert "did you mean 'relay_networks'" in r.stderr
    r = run("check", "--explain", "frobnicate")
    assert r.returncode == 1 and "did you mean" not in r.stderr


def test_explain_with_a_broken_configuration_still_explains(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("max_recipients = many\n")
    r = run("check", "--explain", "max_recipients", "-c", str(conf))
    assert r.returncode == 1
    assert "Recipients per inbound transaction" in r.stdout
    assert f"{conf}:1:" in r.stderr


def test_explain_belongs_to_check():
    r = run("status", "--explain", "listen")
    assert r.returncode == 1 and "--explain" in r.stderr


# ---- descriptions against the binary's key table ------------------------

def test_every_key_of_the_binary_is_described_and_nothing_else():
    keys = check_keys()
    main, pending = described_keys()
    missing = [k for k in keys if k not in main + pending]
    assert not missing, f"keys without a description in docs/keys.txt: {missing}"
    unknown = [k for k in main if k not in keys]
    assert not unknown, f"described but not keys of the binary: {unknown}"
    # Pending descriptions are for keys other branches add: once the key
    # exists, its entry belongs in the main list.
    for k in keys:
        r = run("check", "--explain", k)
        assert r.returncode == 0, (k, r.stderr)
        assert "no description" not in r.stdout, k


def test_configuration_md_documents_every_key():
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    for k in check_keys():
        assert f"### `{k}`" in text, k


# ---- --help against mailhop(8) ------------------------------------------

MAN8 = ROOT / "docs" / "man" / "mailhop.8.scd"


def command_words(tokens):
    words = []
    for t in tokens:
        if not re.fullmatch(r"[a-z]+", t):
            break
        words.append(t)
    return words


def help_commands():
    """Command word tuples of `mailhop --help` ("queue hold ID | release
    ID" is queue hold and queue release)."""
    r = run("--help")
    assert r.returncode == 0
    lines = r.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    out = set()
    for line in lines.splitlines():
        # The description starts after a run of spaces.
        syntax = re.split(r"\s{2,}", line.strip())[0]
        alts = [a.split() for a in syntax.split(" | ")]
        first = command_words(alts[0])
        out.add(tuple(first))
        for alt in alts[1:]:
            words = command_words(alt)
            out.add(tuple(first[:-1] + words))
    return out


def man_section(text, name):
    return text.split(f"\n# {name}\n", 1)[1].split("\n# ", 1)[0]


def man_commands():
    cmds = man_section(MAN8.read_text(), "COMMANDS")
    out = set()
    for line in cmds.splitlines():
        if line.startswith("*mailhop "):
            tokens = line.replace("*", " ").split()[1:]
            out.add(tuple(command_words(tokens)))
    return out


def test_help_lists_the_commands_of_the_man_page():
    h, m = help_commands(), man_commands()
    assert len(h) >= 10, h  # the parser found the list
    assert h == m, (f"only in --help: {sorted(h - m)}; "
                    f"only in mailhop(8): {sorted(m - h)}")


def test_each_command_has_help_and_its_options_are_in_the_man_page():
    options = man_section(MAN8.read_text(), "OPTIONS").replace("\\", "")
    for cmd in sorted({c[0] for c in help_commands()}):
        r = run(cmd, "--help")
        assert r.returncode == 0, cmd
        assert r.stdout.startswith(f"usage: mailhop {cmd}"), (cmd, r.stdout)
        assert "options:" in r.stdout, cmd
        opts = re.findall(r"^\s+(-[-a-zA-Z]+)", r.stdout.split("options:", 1)[1],
                          re.M)
        assert opts, cmd
        for o in opts:
            assert f"*{o}*" in options, f"{cmd} --help: {o} not in mailhop(8)"


def test_global_options_are_in_the_man_page():
    r = run("--help")
    options = man_section(MAN8.read_text(), "OPTIONS").replace("\\", "")
    opts = re.findall(r"^\s+(-[-a-zA-Z]+)", r.stdout.split("options:", 1)[1],
                      re.M)
    assert len(opts) >= 6
    for o in opts:
        assert f"*{o}*" in options, o


# ---- config/examples/ -----------------------------------------------------

import shlex  # noqa: E402

EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.conf"))
# What the container image sets itself (Dockerfile ENV).
IMAGE_ENV = {"MAILHOP_LISTEN": "0.0.0.0:2525",
             "MAILHOP_QUEUE_PATH": "/var/lib/mailhop/queue.db",
             "MAILHOP_ADMIN_SOCKET": "/var/lib/mailhop/mailhop.sock"}
# Keys where a host install and the container may rightly differ.
HOST_ONLY = {"listen", "listen_tls", "queue_path", "admin_socket",
             "relay_networks", "user"}


def with_secrets(text, tmp_path):
    """text with /run/secrets/ pointing into tmp_path, each file made."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in set(re.findall(r"/run/secrets/([\w.-]+)", text)):
        (secrets / name).write_text("placeholder-secret\n")
    return text.replace("/run/secrets/", f"{secrets}/")


def docker_env(text):
    """The -e variables of the example's `docker run` comment."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if "docker run" in l)
    cmd = ""
    for line in lines[start:]:
        part = line.lstrip("#").strip()
        cmd += " " + part.rstrip("\\")
        if not part.endswith("\\"):
            break
    words = shlex.split(cmd)
    assert words[:2] == ["docker", "run"] and \
        words[-1] in ("mailhop", "mailhop:slim"), cmd
    env = {}
    for i, w in enumerate(words):
        if w == "-e":
            name, value = words[i + 1].split("=", 1)
            env[name] = value
    return env


def effective(r):
    assert r.returncode == 0, r.stderr
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines())


def test_there_are_the_examples_the_issue_asks_for():
    names = {p.stem for p in EXAMPLES}
    assert {"direct-mx", "smarthost-587", "smarthost-465", "gmail",
            "amazon-ses", "microsoft-365", "kubernetes-relay"} <= names


def test_every_example_passes_check_and_its_docker_line_is_equivalent(
        tmp_path):
    for path in EXAMPLES:
        text = path.read_text()
        conf = tmp_path / path.name
        conf.write_text(with_secrets(text, tmp_path))
        from_file = effective(run("check", "-c", str(conf)))
        r = run("check", "-c", str(conf))
        assert "warn" not in r.stderr, (path.name, r.stderr)

        env = dict(IMAGE_ENV)
        env.update({k: with_secrets(v, tmp_path)
                    for k, v in docker_env(text).items()})
        r = run("check", "-c", "/dev/null", env=env)
        assert "not a mailhop setting" not in r.stderr, (path.name, r.stderr)
        from_docker = effective(r)
        differ = {k for k in from_file
                  if k not in HOST_ONLY and from_file[k] != from_docker[k]}
        assert not differ, (path.name, {k: (from_file[k], from_docker[k])
                                        for k in differ})


def test_examples_with_a_password_keep_it_in_a_file():
    for path in EXAMPLES:
        text = path.read_text()
        assert not re.search(r"^relayhost_password\s*=", text, re.M), path
        if re.search(r"^relayhost_user\s*=", text, re.M):
            # the password, or (OAuth2) the client secret, from a file
            assert re.search(r"^relayhost_(password|oauth2_client_secret)"
                             r"_file\s*=\s*/run/secrets/", text, re.M), path
        assert not re.search(r"^relayhost_oauth2_(client_secret|"
                             r"refresh_token)\s*=", text, re.M), path


def test_a_missing_secret_fails_check(tmp_path):
    # The examples' check is real: without the password file it fails.
    path = ROOT / "config" / "examples" / "smarthost-587.conf"
    conf = tmp_path / "x.conf"
    conf.write_text(path.read_text().replace("/run/secrets/",
                                             f"{tmp_path}/none/"))
    r = run("check", "-c", str(conf))
    assert r.returncode == 1 and "relayhost_password_file" in r.stderr


# ---- README -----------------------------------------------------------------

def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/CONFIGURATION.md" in links and "config/examples/" in links
    for link in links:
        if "://" in link:
            continue
        assert not link.startswith(".."), link
        assert (ROOT / link).exists(), f"README links {link}, which is missing"


def test_configuration_md_defaults_are_the_binary_defaults():
    # The generator reads the defaults from src/config/keys.c's source; the
    # binary's own `check` on an empty file must print the same values.
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    documented = dict(re.findall(r"^\| \[`(\w+)`\]\(#\w+\) \| (.*) \|$", text,
                                 re.M))
    r = run("check", "-c", "/dev/null")
    assert r.returncode == 0, r.stderr
    printed = dict(line.split(" = ", 1) for line in r.stdout.splitlines())
    assert set(documented) == set(printed)
    for key, value in printed.items():
        doc = documented[key]
        if doc.startswith("set at start-up"):
            continue  # hostname: the system's
        expect = "empty" if value == "" else f"`{value}`"
        assert doc == expect, (key, doc, value)

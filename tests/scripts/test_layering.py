#!/usr/bin/env python3
"""Tests of scripts/layering itself: the real tree passes; a copy of it with
one forbidden include added (for each rule of ARCHITECTURE.md) fails and
names the file; a commented-out include does not count; an include through
another header does, with its chain.

    tests/scripts/test_layering.py [REPO_ROOT]
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else
            Path(__file__).resolve().parents[2])
CHECK = ROOT / "scripts" / "layering"
failures = 0
checks = 0


def run(src):
    r = subprocess.run([sys.executable, str(CHECK), str(src)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def expect(what, cond, out=""):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print(f"FAIL: {what}\n{out}")


def with_include(tmp, path, line, *, prepend=True):
    """A fresh copy of src/ with `line` added to src/<path>."""
    src = Path(tmp) / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "src", src)
    f = src / path
    text = f.read_text() if f.exists() else ""
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(line + "\n" + text if prepend else text + "\n" + line + "\n")
    return src


FORBIDDEN = [
    ("proto/text.c", "#include <uv.h>"),
    ("proto/text.c", "#include <sqlite3.h>"),
    ("proto/text.c", "#include <ldns/ldns.h>"),
    ("proto/text.c", "#include <openssl/ssl.h>"),
    ("proto/text.c", "#include <sys/socket.h>"),
    ("proto/text.c", "#include <netinet/in.h>"),
    ("proto/reply.h", '#include "loop/conn.h"'),
    ("proto/text.c", '#include "queue/store.h"'),
    ("proto/text.c", '#include "relay/serve.h"'),
    ("proto/new_parser.c", "  #  include <uv.h>"),  # a new file, spaced
    ("queue/sched.c", '#include "loop/conn.h"'),
    ("queue/sched.c", '#include "dns/resolver.h"'),
    ("queue/store.c", '#include "proto/smtp_server.h"'),
    ("queue/store.c", '#include "proto/dsn.h"'),
    ("queue/store.c", '#include "../relay/outbound.h"'),  # relative path
    ("dns/mx.c", '#include "queue/store.h"'),
    ("dns/resolver.c", '#include "relay/outbound.h"'),
    ("loop/conn.c", '#include "proto/smtp_client.h"'),
    ("loop/conn.h", '#include "proto/smtp_server.h"'),
    ("relay/admin/dispatch.c", "#include <sqlite3.h>"),  # queue/ only
    ("relay/outbound.c", "#include <ldns/ldns.h>"),  # only dns/ has ldns
]

with tempfile.TemporaryDirectory(prefix="test_layering.") as tmp:
    rc, out = run(ROOT / "src")
    expect("the real tree is clean", rc == 0, out)
    expect("it says how much it read", "files" in out and "includes" in out,
           out)

    for path, line in FORBIDDEN:
        src = with_include(tmp, path, line)
        rc, out = run(src)
        expect(f"{path}: {line.strip()} fails", rc == 1, out)
        expect(f"{path}: {line.strip()} is named", path in out, out)

    # Allowed: proto using proto, queue using SQLite and libuv, dns using
    # ldns and sockets, loop using OpenSSL, a comment mentioning a header.
    for path, line in [("proto/text.c", '#include "proto/reply.h"'),
                       ("queue/sched.c", "#include <sqlite3.h>"),
                       ("dns/mx.c", "#include <ldns/ldns.h>"),
                       ("loop/conn.c", "#include <openssl/ssl.h>"),
                       ("proto/text.c", "/* #include <uv.h> */"),
                       ("proto/text.c", "// #include <uv.h>"),
                       ("relay/serve.c", '#include "proto/smtp_server.h"')]:
        src = with_include(tmp, path, line)
        rc, out = run(src)
        expect(f"{path}: {line.strip()} is allowed", rc == 0, out)

    # Through another header: proto/ including config.h, which brings
    # socket headers with it.
    src = with_include(tmp, "proto/text.h", '#include "config.h"',
                       prepend=False)
    rc, out = run(src)
    expect("an include through config.h fails", rc == 1, out)
    expect("with its chain", "via config.h" in out and "sys/socket.h" in out,
           out)

    # Nothing to read is not a pass.
    empty = Path(tmp) / "empty"
    empty.mkdir()
    rc, out = run(empty)
    expect("an empty tree fails", rc != 0, out)

print(f"test_layering: {checks} checks, {failures} failed")
sys.exit(1 if failures or checks == 0 else 0)

#!/usr/bin/env python3
"""Counts every test result in build-results/ and prints 'N passed, M failed'.

Sources: steps.txt (format, builds, layering, fuzz targets), meson's
testlog.json files (C unit tests) and pytest's JUnit XML files (integration
tests).  expected.txt lists the result files the run meant to produce, one a
line: a missing or empty one (a suite that did not run, crashed before
writing, or found no tests) counts as a failure, never as nothing.  Exit 1 on
any failure or when no test ran at all.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
passed = failed = skipped = 0
failures = []
skips = []


def fail(name):
    global failed
    failed += 1
    failures.append(name)


steps = out / "steps.txt"
if steps.exists():
    for line in steps.read_text().splitlines():
        if not line.strip():
            continue
        status, name = line.split(" ", 1)
        if status == "PASS":
            passed += 1
        else:
            fail(name)

expected = out / "expected.txt"
if expected.exists():
    for name in expected.read_text().split():
        f = out / name
        if not f.exists() or f.stat().st_size == 0:
            fail(f"{name}: no results (the suite did not run)")

for log in sorted(out.glob("unit*.json")):
    n = 0
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        n += 1
        name = f"{log.stem}:{r.get('name')}"
        if r.get("result") == "OK":
            passed += 1
        elif r.get("result") == "SKIP":
            skipped += 1
            skips.append(name)
        else:
            fail(name)
    if n == 0 and log.stat().st_size:
        fail(f"{log.name}: no unit test results")

for xml in sorted(out.glob("*.xml")):
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        fail(f"{xml.name}: unreadable ({e})")
        continue
    n = 0
    for case in root.iter("testcase"):
        n += 1
        name = f"{xml.stem}:{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            fail(name)
        elif case.find("skipped") is not None:
            skipped += 1
            why = case.find("skipped").get("message", "")
            skips.append(f"{name} ({why})" if why else name)
        else:
            passed += 1
    if n == 0:
        fail(f"{xml.name}: no test cases")

for s in skips:
    print(f"skipped: {s}")
for f in failures:
    print(f"failed: {f}")
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)

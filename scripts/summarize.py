#!/usr/bin/env python3
"""Counts every test result in build-results/ and prints 'N passed, M failed'.

Sources: steps.txt (format, builds, fuzz), meson's testlog.json files (C unit
tests) and pytest's JUnit XML (integration tests).  Exit 1 on any failure or
when no test ran at all.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
passed = failed = skipped = 0
failures = []

steps = out / "steps.txt"
if steps.exists():
    for line in steps.read_text().splitlines():
        status, name = line.split(" ", 1)
        if status == "PASS":
            passed += 1
        else:
            failed += 1
            failures.append(name)

for log in sorted(out.glob("unit*.json")):
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        name = f"{log.stem}:{r.get('name')}"
        if r.get("result") == "OK":
            passed += 1
        elif r.get("result") in ("SKIP",):
            skipped += 1
        else:
            failed += 1
            failures.append(name)

for xml in sorted(out.glob("*.xml")):
    root = ET.parse(xml).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            failures.append(name)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1

for f in failures:
    print(f"failed: {f}")
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)

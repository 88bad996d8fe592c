"""Add up the JUnit XML files of ``make test``'s pytest runs (one per Keras backend) into one closing line.

    python -m parity_tests.totals reports/junit/*.xml   ->   total: 1234 passed, 0 failed, 30 skipped
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def totals(paths: list[Path]) -> dict[str, int]:
    """passed/failed/skipped summed over the <testsuite> elements of every file (errors count as failed)."""
    out = {"passed": 0, "failed": 0, "skipped": 0}
    for path in paths:
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for suite in suites:
            tests, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            out["passed"] += tests - failed - skipped
            out["failed"] += failed
            out["skipped"] += skipped
    return out


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv]
    if not paths:
        print("usage: python -m parity_tests.totals FILE.xml ...", file=sys.stderr)
        return 2
    t = totals(paths)
    print(f"total: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
    return 1 if t["failed"] or not t["passed"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

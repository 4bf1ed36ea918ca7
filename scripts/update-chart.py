#!/usr/bin/env python3
"""Write the chart's generated files from the Python models (launcher/render/chart_files.py says which).

Run after changing the job models, the examples or the scenarios (launcher.render.chart_files.SCENARIOS):
  python scripts/update-chart.py            (--check: exit 1 if a file is out of date)
tests/test_chart_values.py fails while any of them is stale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.render.chart_files import update  # noqa: E402


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = update(check)
    for path in stale:
        print(f"{'stale' if check else 'wrote'}: {os.path.relpath(path, ROOT)}")
    return 1 if stale and check else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

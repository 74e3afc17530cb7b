"""``python -m bench.core`` on a small input: the report is printed, not written over BENCHMARKS.md.

The figures themselves are ``make bench``'s; here only what the report counts is checked
against the input it generated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_report_goes_to_stdout_and_accounts_for_every_record(tmp_path: Path) -> None:
    args = ["--records", "3000", "--users", "400", "--repeat", "1", "--profile-records", "1000"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.core", *args],
        cwd=tmp_path,  # a BENCHMARKS.md written by mistake would land here
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert list(tmp_path.iterdir()) == []
    report = done.stdout
    assert report.startswith("# lineguard core benchmark\n")
    assert f"`.venv/bin/python -m bench.core {' '.join(args)}`" in report
    generated = report.split("## Input", 1)[1].split("## Results", 1)[0]
    counts = report.split("Counts of the last full-core run:", 1)[1]
    invalid = int(
        generated.split("Invalid, to be dead-lettered: ", 1)[1].split(" ")[0].replace(",", "")
    )
    duplicates = int(
        generated.split("Exact duplicates (same bytes re-sent 1-200 records later): ", 1)[1].split(
            " "
        )[0]
    )
    assert f"dead letters: {invalid:,} (generated invalid {invalid:,})" in counts
    assert f"duplicates: {duplicates:,} (generated {duplicates:,})" in counts

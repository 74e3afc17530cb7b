"""A policy's fingerprint tells an edited file from the one it replaced when `version` stayed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import orjson

from risk.backtest import backtest, render_text
from risk.policy import load_policy, parse_policy
from risk.replay import parse_records

from builders import NOW, application, ts

LINEGUARD = [sys.executable, "-c", "from streams.entry import main; main()"]
PACKAGED = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
VERSION = load_policy().version
# The same version, but probation after a freeze past 5 DPD instead of 30.
SAME_VERSION_EDITED = PACKAGED.replace("after_dpd_above = 30", "after_dpd_above = 5")


def _lineguard(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    return subprocess.run(
        [*LINEGUARD, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=120, check=False,
    )  # fmt: skip


def test_the_fingerprint_follows_the_effective_policy_not_its_text() -> None:
    packaged = load_policy().fingerprint
    assert re.fullmatch(r"[0-9a-f]{12}", packaged)
    # Every field at its default, written out or left out, in any layout: the same policy.
    assert parse_policy(f'version = "{VERSION}"\n').fingerprint == packaged
    assert parse_policy(PACKAGED.replace("\n[", "\n# a comment\n\n[")).fingerprint == packaged
    # The version is the name, not the content: bumping it keeps the fingerprint.
    assert parse_policy('version = "other"\n').fingerprint == packaged
    assert parse_policy(SAME_VERSION_EDITED).fingerprint != packaged
    assert parse_policy(SAME_VERSION_EDITED).version == VERSION


def test_check_policy_prints_the_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "edited.toml").write_text(SAME_VERSION_EDITED)
    done = _lineguard("check-policy", "edited.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fingerprint = parse_policy(SAME_VERSION_EDITED).fingerprint
    assert done.stdout == (
        f"edited.toml: valid policy, version {VERSION}, fingerprint {fingerprint}\n"
    )


def test_backtest_warns_when_two_different_policies_share_a_version(tmp_path: Path) -> None:
    lines = [orjson.dumps(application("2026-02-01T00:00:00Z", 500000))]
    edited = parse_policy(SAME_VERSION_EDITED)
    result = backtest(parse_records(lines), load_policy(), edited, now=ts(NOW))
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert f"both policies are version {VERSION}, but they differ" in warning
    assert load_policy().fingerprint in warning
    assert edited.fingerprint in warning
    assert f"WARNING: {warning}" in render_text(result).splitlines()
    document = result.document()
    assert document["warnings"] == [warning]
    assert document["candidate"]["policy_fingerprint"] == edited.fingerprint
    # Another version, or the same content: nothing to warn about.
    renamed = parse_policy(SAME_VERSION_EDITED.replace(f'"{VERSION}"', '"edited"', 1))
    for candidate in (renamed, load_policy()):
        quiet = backtest(parse_records(lines), load_policy(), candidate, now=ts(NOW))
        assert quiet.warnings == ()
        assert quiet.document()["warnings"] == []
        assert "WARNING" not in render_text(quiet)
    # The command says it on stderr too, whatever the report's format.
    (tmp_path / "in.jsonl").write_bytes(lines[0] + b"\n")
    (tmp_path / "edited.toml").write_text(SAME_VERSION_EDITED)
    for report_format in ("text", "json"):
        done = _lineguard(
            "backtest", "in.jsonl", "--candidate", "edited.toml", "--partitions", "1",
            "--format", report_format, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"lineguard: warning: {warning}\n" in done.stderr
        assert warning in done.stdout

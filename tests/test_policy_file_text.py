"""How a policy file's text is read, and what the risk team is told when a value is wrong."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from risk.policy import load_policy

PACKAGED = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")


def test_a_byte_order_mark_at_the_start_is_read_as_utf8(tmp_path: Path) -> None:
    # Windows editors save "UTF-8 with BOM"; the file is the packaged policy all the same.
    for name, text in (("bom.toml", PACKAGED), ("bomcrlf.toml", PACKAGED.replace("\n", "\r\n"))):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        policy = load_policy(tmp_path / name)
        assert policy.version == load_policy().version
        assert policy.fingerprint == load_policy().fingerprint

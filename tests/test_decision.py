"""Decision ids: the deterministic uuid5 the contract names."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from risk.decision import uuid5_url


@given(st.text(max_size=300))
def test_uuid5_url_is_the_standard_librarys_uuid5(name: str) -> None:
    assert uuid5_url(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def test_a_known_decision_id() -> None:
    name = "lineguard:u-1842:limit.freeze:9b1f:2026-11-28.1"
    assert uuid5_url(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    assert uuid.UUID(uuid5_url(name)).version == 5

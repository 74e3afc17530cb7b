"""The closed sets every metric label must take its values from: never a user id."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.samples import Sample

from risk.contract import Reason
from risk.limits import DECISION_REASONS, STATUSES
from risk.partition import Outcome
from risk.replay import INPUT_TOPICS

_CODES = {code for codes in DECISION_REASONS.values() for code in codes}
_CLOSED_SETS: dict[str, set[str]] = {
    "outcome": {str(outcome) for outcome in Outcome},
    "reason": {str(reason) for reason in Reason} | _CODES,
    "type": set(DECISION_REASONS),
    "status": set(STATUSES),
    "generation": {"0", "1", "2"},  # the garbage collector's
}
_INTERPRETER_LABELS = {"implementation", "major", "minor", "patchlevel", "version"}
"""``python_info``'s labels, which name the running interpreter."""


def assert_no_label_can_hold_a_user_id(
    samples: Iterable[Sample], topics: Iterable[str] = INPUT_TOPICS, partitions: int = 64
) -> None:
    """Every label is known and every value comes from its closed set.

    A new label fails here until it is added with its own closed set, so a label
    that could carry a user id (or any other unbounded value) never slips in.
    """
    topics = set(topics)
    checked = 0
    for sample in samples:
        for label, value in sample.labels.items():
            checked += 1
            where = f"{sample.name}{{{label}={value!r}}}"
            if sample.name == "python_info":
                assert label in _INTERPRETER_LABELS, where
            elif label == "topic":
                assert value in topics, where
            elif label == "partition":
                assert value.isdigit() and int(value) < partitions, where
            elif label in ("le", "quantile"):
                float(value)
            elif label in ("version", "policy_version", "policy_fingerprint"):
                assert sample.name == "lineguard_build_info", where
            elif label == "consumergroup":  # LINEGUARD_APP_ID, one per worker
                assert sample.name == "lineguard_input_info", where
            else:
                assert label in _CLOSED_SETS, f"unknown label {where}"
                assert value in _CLOSED_SETS[label], where
    assert checked, "no labelled sample to check"

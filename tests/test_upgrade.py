"""What a build reading an earlier build's changelog decides, as the README's guarantees say."""

from __future__ import annotations

from pathlib import Path

from test_graduated import state_after
from test_schema_documents import LIMIT, load, load_asyncapi

from risk.engine import apply
from risk.policy import load_policy
from risk.score import scorecard
from risk.state import STATE_DECODER, STATE_ENCODER

from builders import application, decoded, purchase, repayment

README = Path(__file__).resolve().parent.parent / "README.md"


def test_a_state_whose_spell_was_forgotten_by_its_start_scores_above_replay_until_it_ends() -> None:
    # A 70-DPD spell from 01-13 to 03-21. A build before defect 87's fix dropped it once its
    # start left the 180 days (07-12); this one keeps it until 09-17. On 08-01 the state
    # that build wrote scores 540, where replay of the same input by this one gives 450: what
    # "Upgrading lineguard" says, until the spell is 180 days past its end.
    policy = load_policy()
    lines = [
        purchase("2026-01-01T00:00:00Z", 1000, order="o-1", first_due="2026-01-10T00:00:00Z"),
        repayment("2026-03-21T00:00:00Z", 1000, event_id="r-1"),
        application("2026-07-20T00:00:00Z", 500_000, event_id="a-1"),
    ]
    earlier = state_after(lines, policy)
    earlier.episodes = [
        e for e in earlier.episodes if e.start > earlier.clock - policy.episode_window
    ]
    restored = STATE_DECODER.decode(STATE_ENCODER.encode(earlier))
    replayed = state_after(lines, policy)
    for later in ("2026-08-01T00:00:00Z", "2026-09-17T00:00:00Z"):
        (event,) = decoded([application(later, 500_000, event_id=f"a-{later}")])
        apply(restored, event, policy)
        apply(replayed, event, policy)
        scores = scorecard(restored, policy).score, scorecard(replayed, policy).score
        assert scores == ((540, 450) if later < "2026-09-17" else (540, 540))
    upgrading = " ".join(_guarantees().split("**Upgrading lineguard.**")[1].split())
    assert "Until 180 days after the upgrade, `features.score` can read higher" in upgrading


def test_the_contract_says_a_release_may_repeat_a_decision_with_the_same_id_and_other_content() -> (
    None
):
    # Under an unchanged policy_version a new build applies the records its predecessor left
    # uncommitted, and a fix in it changes what their decisions read, not their ids.
    texts = [load(LIMIT)["description"]]
    texts += [c["description"] for c in load_asyncapi()["channels"].values()
              if c["address"] == "credit.limit-events.v1"]  # fmt: skip
    texts.append(_guarantees())
    for text in texts:
        flat = " ".join(text.split())
        assert "release" in flat
        assert "same event_id and other content" in flat.replace("`", "")


def _guarantees() -> str:
    """The README's section "Guarantees and failure modes"."""
    section = README.read_text("utf-8").split("\n## Guarantees and failure modes\n")[1]
    return section.split("\n## ")[0]

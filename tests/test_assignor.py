"""The partition assignor: Faust's sticky placement, then each member's fair share of actives."""

from __future__ import annotations

from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.assignor import even_out

TOPICS = {"inputs", "users-changelog"}


def member(
    actives: set[int] | None = None, standbys: set[int] | None = None
) -> CopartitionedAssignment:
    return CopartitionedAssignment(set(actives or ()), set(standbys or ()), TOPICS)


def assign(members: dict[str, CopartitionedAssignment], partitions: int, replicas: int) -> None:
    """One rebalance as the worker's assignor runs it: Faust's placement, then evened out."""
    CopartitionedAssignor(TOPICS, members, partitions, replicas).get_assignment()
    even_out(members, partitions, replicas)


def owners(members: dict[str, CopartitionedAssignment]) -> dict[int, str]:
    return {p: name for name, m in members.items() for p in m.actives}


def test_a_fourth_worker_joining_three_that_hold_two_of_six_gets_a_partition() -> None:
    members = {
        "a": member({0, 1}, {2, 4}),
        "b": member({2, 3}, {0, 5}),
        "c": member({4, 5}, {1, 3}),
        "d": member(),
    }
    CopartitionedAssignor(TOPICS, members, 6, 1).get_assignment()
    assert members["d"].actives == set()  # Faust's own placement, defect 102
    even_out(members, 6, 1)
    assert sorted(len(m.actives) for m in members.values()) == [1, 1, 2, 2]
    assert len(members["d"].actives) == 1
    moved = {p for p, name in owners(members).items() if name == "d"}
    assert moved <= {0, 1}  # taken from one member, the others keep theirs
    assert [len(m.actives) for m in (members["b"], members["c"])] == [2, 2]


def test_the_joining_worker_takes_a_partition_it_holds_a_standby_of() -> None:
    members = {"a": member({0, 1}, {3}), "b": member({2, 3}, {0, 1}), "c": member({4, 5}, set())}
    members["d"] = member(set(), {5})
    CopartitionedAssignor(TOPICS, members, 6, 1).get_assignment()
    assert members["d"].actives == set()
    warm = set(members["d"].standbys)
    assert warm
    even_out(members, 6, 1)
    assert len(members["d"].actives) == 1
    assert members["d"].actives <= warm
    taken = next(iter(members["d"].actives))
    assert taken not in members["d"].standbys
    assert sum(taken in m.standbys for m in members.values()) == 1


def test_a_balanced_group_is_left_as_faust_placed_it() -> None:
    members = {"a": member({0, 1, 2}, {3, 4, 5}), "b": member({3, 4, 5}, {0, 1, 2})}
    assign(members, 6, 1)
    assert (members["a"].actives, members["b"].actives) == ({0, 1, 2}, {3, 4, 5})
    assert (members["a"].standbys, members["b"].standbys) == ({3, 4, 5}, {0, 1, 2})


@settings(max_examples=300, deadline=None)
@given(
    partitions=st.integers(1, 12),
    replicas=st.integers(0, 2),
    changes=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), min_size=1, max_size=12),
)
def test_every_member_gets_its_share_across_joins_and_leaves(
    partitions: int, replicas: int, changes: list[tuple[bool, int]]
) -> None:
    """Workers join and leave; each rebalance starts from the last, as Faust's is sticky."""
    members = {"w0": member()}
    assign(members, partitions, replicas)
    for number, (join, which) in enumerate(changes, start=1):
        if join or len(members) == 1:
            members[f"w{number}"] = member()
        else:
            del members[sorted(members)[which % len(members)]]
        CopartitionedAssignor(TOPICS, members, partitions, replicas).get_assignment()
        placed = owners(members)
        floor = partitions // len(members)
        short = sum(max(0, floor - len(m.actives)) for m in members.values())
        even_out(members, partitions, replicas)
        moved = sum(placed[p] != name for p, name in owners(members).items())
        assert moved == short, "only the partitions the short members lack move"
        assert sorted(p for m in members.values() for p in m.actives) == list(range(partitions))
        ceiling = -(-partitions // len(members))
        assert all(floor <= len(m.actives) <= ceiling for m in members.values())
        copies = min(replicas, len(members) - 1)
        for p in range(partitions):
            holders = [m for m in members.values() if p in m.standbys]
            assert len(holders) == copies
            assert all(p not in m.actives for m in holders)

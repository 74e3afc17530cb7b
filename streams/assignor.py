"""Faust's partition assignor, evened out so that a worker joining the group gets partitions.

Faust's ``CopartitionedAssignor`` is sticky: each member keeps its partitions while it holds
at most ⌈P ÷ N⌉ of them, and it trims members to ⌊P ÷ N⌋, which frees partitions for a
newcomer, only when there are no standby replicas. With one standby, three workers
holding two of six partitions each kept them, and a fourth got no partition (nor a
standby: every partition's standby had a holder within its capacity) for as long as the
group did not change (RELIABILITY.md, defect 102). Dropping the standbys would balance the
group, but a ``rocksdb://`` worker taking a partition over resumes from its standby copy
instead of reading the partition's changelog whole (102 has the measurements), so
``rocksdb://`` workers keep one (:func:`standby_replicas`) and this balances them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, MutableMapping

from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor


def standby_replicas(store: str) -> int:
    """One standby copy of each partition on another worker with ``rocksdb://``; none else.

    A ``rocksdb://`` worker that takes a partition over resumes from its standby copy. Faust
    keeps no offset for an in-memory store, so a ``memory://`` worker reads the partition's
    changelog whole either way, and its standby copies only cost memory and the CPU of
    applying the other workers' changelog records (RELIABILITY.md, defect 116).
    """
    return 1 if store.startswith("rocksdb") else 0


def even_out(
    members: Mapping[str, CopartitionedAssignment], partitions: int, replicas: int
) -> None:
    """Give each member at least ⌊partitions ÷ members⌋ actives, moving as few as possible.

    A partition moves from a member holding more than that (the one holding most) to one
    holding fewer (the one holding fewest), preferring one the receiver holds a standby of,
    whose state it already has; the old owner, which has the state too, becomes its
    standby when it has room. Then Faust's assignor places the standbys still missing.
    Members keep at most ⌈partitions ÷ members⌉, as Faust left them.
    """
    if not members:
        return
    held = list(members.values())
    placer = CopartitionedAssignor(held[0].topics, dict(members), partitions, replicas)
    floor, standby_room = placer.min_capacity, placer.max_capacity * placer.replicas
    moved = False
    while needy := [member for member in held if len(member.actives) < floor]:
        receiver = min(needy, key=lambda member: len(member.actives))
        partition, giver = min(
            ((p, member) for member in held if len(member.actives) > floor for p in member.actives),
            key=lambda pair: (pair[0] not in receiver.standbys, -len(pair[1].actives), pair[0]),
        )
        giver.unassign_partition(partition, active=True)
        receiver.standbys.discard(partition)
        receiver.assign_partition(partition, active=True)
        if len(giver.standbys) < standby_room and all(partition not in m.standbys for m in held):
            giver.assign_partition(partition, active=False)
        moved = True
    if moved and placer.replicas:
        placer.get_assignment()  # every active is placed: this places the missing standbys


class EvenPartitionAssignor(PartitionAssignor):
    """Faust's assignor, with each co-partitioned group's actives evened out (:func:`even_out`).

    Faust calls ``_global_table_standby_assignments`` once per rebalance, after placing
    each co-partitioned group and before publishing who owns what, so the owners the
    workers route ``/users`` by are the evened ones; Faust's own step (global tables, which
    lineguard has none of) follows. Only the group's leader assigns; the others read its
    answer.
    """

    def _global_table_standby_assignments(
        self,
        assignments: MutableMapping[str, ClientAssignment],
        partitions_by_topic: Mapping[str, int],
    ) -> MutableMapping[str, ClientAssignment]:
        for (partitions, subscribers), topics in _copartitioned(
            assignments, partitions_by_topic
        ).items():
            group = {m: assignments[m].copartitioned_assignment(topics) for m in subscribers}
            even_out(group, partitions, self.replicas)
            for member, placed in group.items():
                for topic in topics:
                    assignments[member].actives[topic] = sorted(placed.actives)
                    assignments[member].standbys[topic] = sorted(placed.standbys)
        return super()._global_table_standby_assignments(assignments, partitions_by_topic)


def _copartitioned(
    assignments: Mapping[str, ClientAssignment], partitions_by_topic: Mapping[str, int]
) -> dict[tuple[int, frozenset[str]], set[str]]:
    """Faust's co-partitioned groups: topics of one partition count and one set of members.

    Faust gave every subscriber of a group's topics an entry for each (empty when it got
    no partition), and no one else.
    """
    groups: dict[tuple[int, frozenset[str]], set[str]] = defaultdict(set)
    for topic, partitions in partitions_by_topic.items():
        subscribers = frozenset(m for m, a in assignments.items() if topic in a.actives)
        groups[partitions, subscribers].add(topic)
    return groups

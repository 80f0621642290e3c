"""The event time lifecycle judges a partition at, from the consumer kit's watermarks.

Lifecycle reads several topics (profile updates, churn scores, customers, feedback); one
customer's events share a partition index on all of them, but the topics advance at their
own pace (scores follow profile updates). So, per partition index:

- facts are applied up to the high-water event time of the profile-updates topic (the
  snapshot stream every input reaches), or lower while the churn-scores topic, which follows
  it, is active there and behind (active: records not yet consumed, or delivered within
  `idle_after` seconds, or just assigned), or while a raw input topic (accounts, feedback)
  still has records to read. A raw input read to its end is ahead of the snapshots (profile
  reads it first) and holds nothing back;
- clock crossings (dormancy, the end of onboarding, ...) fire up to that time minus the
  allowed lateness: the partition's watermark (DESIGN.md "Time");
- when neither moves, facts up to the latest snapshot or score are applied (every fact, once
  the raw inputs have stopped too), and the clock is the kit's idle-partition clock of the
  profile-updates topic, which follows its slowest active partition (never a raw input
  topic's, which can run far ahead of profile).

Both bounds only move forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition


@dataclass(frozen=True)
class Limits:
    """How far a customer's walk may go: facts applied up to `facts`, clock crossings fired
    up to `timers`."""

    facts: datetime | None
    timers: datetime | None


@dataclass
class EventClock:
    consumer: Any  # shared.kit.EventConsumer: its watermarks, assignment and topics
    idle_after: float
    primary_topic: str
    follower_topics: frozenset[str] = frozenset()
    _since: dict[TopicPartition, float] = field(default_factory=dict)
    _lagging: set[TopicPartition] = field(default_factory=set)
    _facts: dict[int, datetime] = field(default_factory=dict)
    _timers: dict[int, datetime] = field(default_factory=dict)

    async def refresh(self) -> None:
        """Note which assigned partitions still have records to consume (lag): those are
        never idle, however long the consumer takes to reach them."""
        kafka = getattr(self.consumer, "consumer", None)
        if kafka is None:
            return
        lagging: set[TopicPartition] = set()
        for tp in list(self.consumer.assigned):
            try:
                high = kafka.highwater(tp)
                position = await kafka.position(tp)
            except Exception:  # noqa: BLE001 - unknown counts as behind
                lagging.add(tp)
                continue
            if high is None or position < high:
                lagging.add(tp)
        self._lagging = lagging

    def owned(self) -> list[int]:
        """Partition indexes this instance sweeps: those of the primary topic it is assigned,
        so that exactly one member of the consumer group sweeps each customer."""
        self._track()
        return sorted(tp.partition for tp in self.consumer.assigned
                      if tp.topic == self.primary_topic)

    def limits(self, partition: int, wall: float | None = None) -> Limits:
        wall = time.monotonic() if wall is None else wall
        self._track(wall)
        marks = self.consumer.marks
        lead: datetime | None = None
        followers: list[tuple[datetime | None, bool]] = []  # (high, active)
        paced_active = paced_waiting = False
        raw_behind: list[datetime | None] = []  # raw inputs with records not yet consumed
        raw_active = False
        seen: list[datetime] = []
        in_flight = getattr(self.consumer, "in_flight", frozenset())
        for tp in self.consumer.assigned:
            if tp.partition != partition:
                continue
            high = marks.max_seen.get((tp.topic, tp.partition))
            active = self._active(tp, wall)
            if high is not None:
                seen.append(high)
            if tp.topic == self.primary_topic or tp.topic in self.follower_topics:
                paced_active = paced_active or active
                paced_waiting = paced_waiting or (active and high is None)
                if tp.topic == self.primary_topic:
                    lead = high
                else:
                    followers.append((high, active))
            else:
                raw_active = raw_active or active
                if tp in self._lagging or tp in in_flight:
                    # Records not consumed yet, or fetched in the batch being handled and not
                    # all handled yet (the consumer's position, which `refresh` reads, is
                    # already past them): a replay's batch may hold a topic's early records
                    # behind snapshots days ahead of them.
                    raw_behind.append(high)
        facts: datetime | None
        timers: datetime | None
        if paced_waiting or any(high is None for high in raw_behind):
            facts = timers = None  # a stream that must come first has not delivered yet
        elif paced_active or raw_behind:
            # Facts wait for the snapshot stream, for scores still coming in, and for raw
            # inputs with records not yet read; raw inputs read up to their end are ahead of
            # the snapshots (profile reads them first) and hold nothing back.
            holding = [h for h in (lead, *(h for h, a in followers if a), *raw_behind)
                       if h is not None]
            facts = min(holding) if holding else None
            timers = facts - marks.lateness if facts is not None else None
        elif seen:
            # Nothing moves: apply what the snapshots and scores have reached, and raw facts
            # beyond them once those have stopped coming too.
            known = [h for h in (lead, *(h for h, _ in followers)) if h is not None]
            facts = max(known) if raw_active and known else max(seen)
            timers = (
                marks.clock(self.primary_topic, partition, idle_after=self.idle_after, wall=wall)
                if lead is not None
                else facts - marks.lateness
            )
        else:
            facts = timers = None
        return Limits(self._monotone(self._facts, partition, facts),
                      self._monotone(self._timers, partition, timers))

    def _active(self, tp: TopicPartition, wall: float) -> bool:
        marks = self.consumer.marks
        last = max(marks.last_event_wall.get((tp.topic, tp.partition), float("-inf")),
                   self._since.get(tp, 0.0))
        return tp in self._lagging or wall - last < self.idle_after

    def idle(self, partition: int, wall: float | None = None) -> bool:
        """No input topic of the partition delivered within `idle_after` seconds."""
        wall = time.monotonic() if wall is None else wall
        return not any(self._active(tp, wall) for tp in self.consumer.assigned
                       if tp.partition == partition)

    def _track(self, wall: float | None = None) -> None:
        wall = time.monotonic() if wall is None else wall
        assigned = set(self.consumer.assigned)
        for tp in list(self._since):
            if tp not in assigned:
                del self._since[tp]
        for tp in assigned:
            self._since.setdefault(tp, wall)

    @staticmethod
    def _monotone(
        cache: dict[int, datetime], partition: int, value: datetime | None
    ) -> datetime | None:
        known = cache.get(partition)
        if value is None or (known is not None and known >= value):
            return known
        cache[partition] = value
        return value

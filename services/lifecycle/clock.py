"""The event time lifecycle judges a partition at, from the consumer kit's watermarks.

Lifecycle reads several topics (profile updates, churn scores, customers, feedback); one
customer's events share a partition index on all of them, but the topics advance at their
own pace (scores follow profile updates). So, per partition index:

- facts are applied up to the lowest high-water event time among the input topics that are
  active there (those with records not yet consumed, those that delivered within
  `idle_after` seconds, and those just assigned) and the profile-updates topic, active or
  not, so a fact is never judged before the facts of the same instant on a slower topic have
  arrived (raw inputs run ahead of profile's snapshots, scores behind them);
- clock crossings (dormancy, the end of onboarding, ...) fire up to that time minus the
  allowed lateness: the partition's watermark (DESIGN.md "Time");
- when every topic of the partition is idle, every fact seen is applied and the clock is the
  kit's idle-partition clock of the profile-updates topic, which follows its slowest active
  partition (never a raw input topic's, which can run far ahead of profile).

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
        active: list[datetime | None] = []
        seen: list[datetime] = []
        primary: TopicPartition | None = None
        for tp in self.consumer.assigned:
            if tp.partition != partition:
                continue
            high = marks.max_seen.get((tp.topic, tp.partition))
            if high is not None:
                seen.append(high)
            if tp.topic == self.primary_topic:
                primary = tp
            if self._active(tp, wall):
                active.append(high)
        lead = marks.max_seen.get((primary.topic, primary.partition)) if primary else None
        facts: datetime | None
        timers: datetime | None
        if any(high is None for high in active):
            facts = timers = None  # an active topic has not delivered yet: wait for it
        elif active:
            # The profile stream, which every other input also reaches, bounds the facts
            # even while it is quiet: raw inputs run ahead of it, scores behind it.
            facts = min([h for h in active if h is not None] + ([lead] if lead else []))
            timers = facts - marks.lateness
        elif seen:
            facts = max(seen)
            timers = (
                marks.clock(primary.topic, partition, idle_after=self.idle_after, wall=wall)
                if lead is not None and primary is not None
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

"""Scoring's event-time clock and the sweep of time-driven points.

The clock of a partition is where time-driven points are taken and label windows close:
every customer-initiated event before it has been counted. It is the lowest watermark among
the activity topics active on that partition (a topic that has been quiet for a while, in
wall time, is not waited for; when all are quiet the partition follows the slowest active
partition, as DESIGN.md "Time" has it).

The sweep runs after every batch (the kit's hook) and from a periodic tick, under the
consumer's batch lock, so the clock moving on without new events (idle partitions) still
ages silent customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.scoring.handlers import catch_up
from services.scoring.store import ScoringStore
from shared.kit import UnitOfWork

log = logging.getLogger("tenure.scoring.sweep")


class Clock:
    """Each owned partition's clocks.

    `activity()`: every customer-initiated event before it has been counted (label windows
    close by it). `points()`: also every snapshot before it has arrived, so a time-driven
    point is judged with the snapshot of its time (profile's snapshots lag the raw events
    they are made from; in a replay, by weeks of event time)."""

    def __init__(self, consumer: Callable[[], Any], activity_topics: list[str],
                 snapshot_topic: str, idle_after: float):
        self._consumer = consumer
        self.topics = activity_topics
        self.snapshot_topic = snapshot_topic
        self.idle_after = idle_after
        self.swept_to: dict[int, datetime] = {}

    def activity(self, wall: float | None = None) -> dict[int, datetime]:
        kit = self._consumer()
        marks = kit.marks
        wall = time.monotonic() if wall is None else wall
        partitions = {tp.partition for tp in list(kit.assigned) if tp.topic in self.topics}
        out: dict[int, datetime] = {}
        for p in partitions:
            at = self._activity_of(marks, p, wall)
            if at is not None:
                out[p] = at
        return out

    def activity_of(self, partition: int) -> datetime | None:
        """`activity().get(partition)`, computed for that partition alone."""
        kit = self._consumer()
        if not any(tp.partition == partition and tp.topic in self.topics
                   for tp in list(kit.assigned)):
            return None
        return self._activity_of(kit.marks, partition, time.monotonic())

    def _activity_of(self, marks: Any, p: int, wall: float) -> datetime | None:
        clocks, active = [], []
        for topic in self.topics:
            if (topic, p) not in marks.max_seen:
                continue
            at = marks.clock(topic, p, idle_after=self.idle_after, wall=wall)
            if at is None:
                continue
            clocks.append(at)
            if wall - marks.last_event_wall.get((topic, p), float("-inf")) < self.idle_after:
                active.append(at)
        if not clocks:
            return None
        return min(active) if active else max(clocks)

    def points(self, activity: dict[int, datetime] | None = None) -> dict[int, datetime]:
        kit = self._consumer()
        activity = self.activity() if activity is None else activity
        out: dict[int, datetime] = {}
        for p, at in activity.items():
            snapshots = kit.marks.clock(self.snapshot_topic, p, idle_after=self.idle_after)
            if snapshots is not None:
                out[p] = min(at, snapshots)
        return out


async def sweep(uow: UnitOfWork[ScoringStore], clock: Clock, chunk: int = 500) -> int:
    """Every customer due by their partition's clock gets their time-driven points; then
    windows the activity clock has passed resolve positive."""
    activity = clock.activity()
    points_clock = clock.points(activity)
    points = 0
    while points_clock:
        due = await uow.store.due(points_clock, chunk)
        if not due:
            break
        progressed = 0
        started = time.monotonic()
        for state in due:
            progressed += await catch_up(uow, state, until=points_clock[state.partition],
                                         inclusive=True, known=activity.get(state.partition))
            if time.monotonic() - started > 0.05:
                await asyncio.sleep(0)  # a long sweep must not starve the consumer's heartbeat
                started = time.monotonic()
        await uow.flush()
        points += progressed
        if not progressed:
            break
    if activity:
        await uow.store.resolve_horizons(activity)
    clock.swept_to.update(points_clock)
    return points


def after_batch(clock: Clock) -> Any:
    async def hook(uow: UnitOfWork[ScoringStore]) -> None:
        await sweep(uow, clock)

    return hook


class Ticker:
    """Sweeps between batches, when the clock moves without new events."""

    def __init__(self, *, engine: Any, settings: Any, clock: Clock,
                 consumer: Callable[[], Any], store_factory: Callable[[Any], ScoringStore],
                 on_written: Callable[[], None], interval: float):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self._consumer = consumer
        self.store_factory = store_factory
        self.on_written = on_written
        self.interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage pauses the sweep, never ends it
                log.warning("sweep tick failed", extra={"reason": type(exc).__name__})

    async def tick(self) -> int:
        kit = self._consumer()
        async with kit.batch_lock:
            if self.settled():
                return 0
            async with self.engine.begin() as conn:
                uow: UnitOfWork[ScoringStore] = UnitOfWork(conn, self.store_factory(conn),
                                                           self.settings)
                points = await sweep(uow, self.clock)
                await uow.flush()
        if points:
            self.on_written()
        return points

    def settled(self) -> bool:
        """The last sweep covered every partition's clock."""
        swept = self.clock.swept_to
        return all(swept.get(p) is not None and t <= swept[p]
                   for p, t in self.clock.points().items())

"""The sweeper: finds customers whose next threshold has passed the event-time watermark of
their partition and walks them forward, so silence ages customers without any new event.
It also applies facts that waited for a slower input topic once that topic has caught up.

It reads customers only through the next-due index (partition, next_due_at) and the waiting
index (partition, pending_from), one batch per transaction, only for the partitions this
instance owns, and skips rows another writer holds. A time-driven transition carries the
event time at which it became true, never the time of the sweep, and the same deterministic
event id whoever computes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.lifecycle.clock import EventClock, Limits
from services.lifecycle.metrics import LifecycleMetrics
from services.lifecycle.progress import Context, advance_customers
from services.lifecycle.settings import LifecycleSettings
from services.lifecycle.store import LifecycleStore, customer_stages
from shared.kit import UnitOfWork

log = logging.getLogger("tenure.lifecycle.sweeper")


@dataclass
class Sweeper:
    engine: AsyncEngine
    settings: LifecycleSettings
    clock: EventClock
    context: Callable[[], Context]
    metrics: LifecycleMetrics
    on_written: Callable[[], None] = lambda: None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sweeps: int = 0

    def notify(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.settings.sweep_interval_seconds)
            self.wakeup.clear()
            try:
                await self.sweep()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage pauses sweeping, never ends it
                log.warning("sweep failed; retrying", extra={"reason": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def sweep(self) -> int:
        """One pass over the owned partitions; returns the customers advanced."""
        started = time.perf_counter()
        total = 0
        await self.clock.refresh()
        for partition in self.clock.owned():
            limits = self.clock.limits(partition)
            for kind in ("due", "waiting"):
                if (limits.timers if kind == "due" else limits.facts) is None:
                    continue
                while True:
                    advanced, failed = await self._sweep_batch(partition, limits, kind)
                    total += advanced
                    if advanced < self.settings.sweep_batch or failed == advanced:
                        break
        self.sweeps += 1
        if total:
            self.metrics.swept.inc(total)
            self.on_written()
        self.metrics.sweep_seconds.observe(time.perf_counter() - started)
        return total

    async def _sweep_batch(self, partition: int, limits: Limits, kind: str) -> tuple[int, int]:
        async with self.engine.begin() as conn:
            store = LifecycleStore(conn, self.settings.partitions)
            uow: UnitOfWork[LifecycleStore] = UnitOfWork(conn, store, self.settings)
            if kind == "due":
                assert limits.timers is not None
                rows = await store.due(partition, limits.timers, self.settings.sweep_batch)
            else:
                assert limits.facts is not None
                rows = await store.waiting(partition, limits.facts, self.settings.sweep_batch)
            if not rows:
                return 0, 0
            outcome = await advance_customers(uow, rows, {}, lambda _: limits, self.context())
            await uow.flush()
        return len(rows), outcome.failed

    async def status(self) -> dict[str, Any]:
        """Per owned partition: how far facts and clocks have been judged, how many customers
        are due now; `settled` when every partition is idle and nobody is due."""
        parts = []
        await self.clock.refresh()
        async with self.engine.connect() as conn:
            for partition in self.clock.owned():
                limits = self.clock.limits(partition)
                due = 0
                c = customer_stages.c
                for column, bound in ((c.next_due_at, limits.timers),
                                      (c.pending_from, limits.facts)):
                    if bound is not None:
                        due += int(await conn.scalar(
                            sa.select(sa.func.count()).select_from(customer_stages)
                            .where(c.partition == partition, column <= bound)
                        ) or 0)
                parts.append({"partition": partition, "facts_through": limits.facts,
                              "clock": limits.timers, "due": due,
                              "idle": self.clock.idle(partition)})
        return {
            "partitions": parts,
            "due": sum(p["due"] for p in parts),
            "sweeps": self.sweeps,
            "settled": bool(parts) and all(p["idle"] and p["due"] == 0 for p in parts),
        }

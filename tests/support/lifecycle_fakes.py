"""An in-memory LifecycleStore for pure tests of lifecycle's progress code (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from services.lifecycle.domain import Position, Transition
from services.lifecycle.facts import Fact
from services.lifecycle.store import CustomerRow, Written


@dataclass
class FakeStore:
    """The LifecycleStore contract, in memory (what the SQL does, row for row)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    log: dict[str, dict[str, Fact]] = field(default_factory=dict)

    def keep(self, customer_id: str, facts: Iterable[Fact]) -> None:
        for f in facts:
            self.log.setdefault(customer_id, {}).setdefault(f.event_id, f)

    def row(self, cid: str) -> CustomerRow:
        r = self.rows.get(cid)
        if r is None:
            return CustomerRow(cid, 0, None, None, None, Position(), None, None, None, None, 0)
        return CustomerRow(cid, 0, r["stage"], r["since"], r["rule"],
                           Position.from_json(r["position"]), r["log_start"], r["at"],
                           r["pending_from"], r["next_due_at"], r["history_seq"])

    async def lock(self, ids: Iterable[str]) -> dict[str, CustomerRow]:
        return {c: self.row(c) for c in sorted(set(ids))}

    def due(self, clock: datetime) -> dict[str, CustomerRow]:
        return {c: self.row(c) for c, r in self.rows.items()
                if r["next_due_at"] is not None and r["next_due_at"] <= clock}

    async def facts_since(self, since: dict[str, datetime | None]) -> dict[str, list[Fact]]:
        return {c: [f for f in self.log.get(c, {}).values() if s is None or f.at > s]
                for c, s in since.items()}

    async def bases(self, ids: Sequence[str]) -> dict[str, Position | None]:
        return {c: Position.from_json(self.rows[c]["base"])
                if c in self.rows and self.rows[c]["base"] else None for c in ids}

    async def announced(self, ids: Sequence[str]) -> dict[str, list[tuple[UUID, Transition]]]:
        out: dict[str, list[tuple[UUID, Transition]]] = {c: [] for c in ids}
        for h in sorted(self.history, key=lambda h: h["seq"]):
            if h["customer_id"] in out and h["kind"] == "transition" and not h["retracted_by"]:
                out[h["customer_id"]].append((h["event_id"], Transition(
                    h["from_stage"], h["to_stage"], h["rule"], h["transition_at"])))
        return out

    async def lineage_counts(self, lineages: Sequence[UUID]) -> dict[UUID, int]:
        counts: dict[UUID, int] = {}
        for h in self.history:
            if h["lineage"] in lineages:
                counts[h["lineage"]] = counts.get(h["lineage"], 0) + 1
        return counts

    async def write(self, changes: Sequence[Written]) -> None:
        for w in changes:
            cid, p = w.row.customer_id, w.position
            old = self.rows.get(cid, {})
            self.rows[cid] = {
                "stage": p.stage, "since": p.stage_entered_at, "rule": p.rule,
                "position": p.to_json(),
                "base": w.base.to_json() if w.base is not None else old.get("base"),
                "log_start": w.log_start, "at": p.at, "pending_from": w.pending_from,
                "next_due_at": w.next_due_at, "history_seq": w.row.history_seq + len(w.history),
            }
            self.history += [dict(h) for h in w.history]
            for event_id, by in w.retract:
                for h in self.history:
                    if h["event_id"] == event_id:
                        h["retracted_by"] = by
            if w.base is not None and w.base.at is not None:
                self.log[cid] = {k: f for k, f in self.log.get(cid, {}).items()
                                 if f.at > w.base.at}

"""Advancing customers through event time, for the batch hook and the sweeper alike.

A customer's walk normally continues from its stored position with the new facts. A fact
older than the position (a late fact) means the history since may be wrong: the walk is
replayed from the base checkpoint over the facts log, the result is compared with what was
announced (domain.reconcile), and the differences go out: one corrective `stage.changed`
(rule `correction`) that withdraws the transitions that no longer hold and brings consumers
back to the stage where the histories part, then the corrected transitions. Every so often
the base moves forward (the log keeps `correction_window_days` of facts behind the position);
a fact older than the base is applied as of the base.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from services.lifecycle.clock import Limits
from services.lifecycle.domain import Position, Step, Transition, advance, next_due, reconcile
from services.lifecycle.facts import Fact
from services.lifecycle.metrics import LifecycleMetrics
from services.lifecycle.rules import CORRECTION_RULE, RuleSet
from services.lifecycle.store import CustomerRow, LifecycleStore, Written
from shared.events import Stage, StageChange, StageChanged, derived_event_id
from shared.kit import UnitOfWork
from shared.logs import customer_ref
from shared.settings import OUTPUT_TOPICS

log = logging.getLogger("tenure.lifecycle")
NOTHING = datetime(1, 1, 2, tzinfo=UTC)  # a fact limit before every fact: apply none yet


@dataclass(frozen=True)
class Outcome:
    announced: int
    failed: int


@dataclass
class _Result:
    row: CustomerRow
    step: Step
    withdrawn: list[tuple[UUID, Transition]]
    late: list[Fact]
    log_start: datetime | None
    pending_from: datetime | None
    base: Position | None = None  # a base to keep, other than the walk's own checkpoint


@dataclass(frozen=True)
class Context:
    rules: RuleSet
    lateness: timedelta
    window: timedelta
    metrics: LifecycleMetrics | None = None


async def advance_customers(
    uow: UnitOfWork[LifecycleStore],
    rows: Mapping[str, CustomerRow],
    new_facts: Mapping[str, list[Fact]],
    limits_of: Callable[[CustomerRow], Limits],
    ctx: Context,
) -> Outcome:
    """Advance each locked customer with its new facts; write, and emit what changed."""
    store = uow.store
    plans: dict[str, tuple[str, Limits, datetime | None]] = {}
    since: dict[str, datetime | None] = {}
    for cid, row in rows.items():
        limits = _widen(limits_of(row), row.position.at)
        at = row.position.at
        late = at is not None and (
            any(f.at <= at for f in new_facts.get(cid, []))
            or (row.pending_from is not None and row.pending_from <= at)
        )
        capture = _capture_at(row, limits, ctx.window)
        if late or capture is not None:
            plans[cid] = ("late" if late else "roll", limits, capture)
            since[cid] = None
        else:
            plans[cid] = ("forward", limits, None)
            waiting = row.pending_from
            if waiting is not None and limits.facts is not None and waiting <= limits.facts:
                since[cid] = at
    logged = await store.facts_since(since)
    replayed = [cid for cid, (how, _, _) in plans.items() if how != "forward"]
    bases = await store.bases(replayed) if replayed else {}
    announced = await store.announced(replayed) if replayed else {}

    results: list[_Result] = []
    failed = 0
    for cid, (how, limits, capture) in plans.items():
        row = rows[cid]
        facts = _union(logged.get(cid, []), new_facts.get(cid, []))
        start = row.log_start or min((f.at for f in facts), default=None)
        try:
            if how == "forward":
                # Facts that still wait in the log were not read (none is applicable yet):
                # the walk must not judge time past the earliest of them either.
                unread = row.pending_from if cid not in since else None
                step = advance(row.position, facts, fact_limit=limits.facts or NOTHING,
                               timer_limit=limits.timers, rules=ctx.rules, waiting_from=unread)
                waiting = _earliest(step.pending)
                if unread is not None:
                    waiting = min(waiting or unread, unread)
                result = _Result(row, step, [], [], start, waiting)
                if row.legacy:
                    # Its stored history is the base late facts replay from.
                    result.base = _origin(row)
                results.append(result)
                continue
            if ctx.metrics is not None:
                ctx.metrics.replays.labels(how).inc()
            base = bases.get(cid) or _origin(row)
            step = advance(base, facts, fact_limit=limits.facts or NOTHING,
                           timer_limit=limits.timers, rules=ctx.rules, capture_at=capture)
            stood = announced.get(cid, [])[base.count:]
            withdrawn, new = reconcile([t for _, t in stood], step.transitions)
            at = row.position.at
            waited = row.pending_from
            arrived_late = [f for f in facts if at is not None and f.at <= at and (
                f in new_facts.get(cid, []) or (waited is not None and f.at >= waited))]
            step.transitions = new
            results.append(_Result(row, step, stood[len(stood) - len(withdrawn):], arrived_late,
                                   start, _earliest(step.pending)))
        except Exception as exc:  # noqa: BLE001 - one customer's fault must not stop the rest
            failed += 1
            log.error("lifecycle could not advance a customer; left as it was",
                      extra={"customer": customer_ref(cid), "reason": type(exc).__name__})
    return Outcome(await _write(uow, results, ctx), failed)


def _widen(limits: Limits, at: datetime | None) -> Limits:
    """Never walk back: what was applied or fired before stays applied."""
    if at is None:
        return limits
    return Limits(max(limits.facts, at) if limits.facts else at,
                  max(limits.timers, at) if limits.timers else at)


def _capture_at(row: CustomerRow, limits: Limits, window: timedelta) -> datetime | None:
    """Where to move the base to, when the facts log holds more than two windows."""
    end = limits.timers
    if end is None or row.log_start is None or end - row.log_start <= 2 * window:
        return None
    capture = end - window
    if limits.facts is not None:
        capture = min(capture, limits.facts)
    return capture if capture > row.log_start else None


def _origin(row: CustomerRow) -> Position:
    """Where a customer's walk starts when no base was kept yet."""
    if not row.legacy:
        return Position()
    # A history written before facts were logged: its last stage is the starting point.
    return Position(stage=row.stage, stage_entered_at=row.stage_entered_at, rule=row.rule,
                    at=row.log_start or row.stage_entered_at, count=row.history_seq)


def _earliest(facts: list[Fact]) -> datetime | None:
    return min((f.at for f in facts), default=None)


def _union(*groups: list[Fact]) -> list[Fact]:
    seen: dict[str, Fact] = {}
    for group in groups:
        for fact in group:
            seen.setdefault(fact.event_id, fact)
    return list(seen.values())


async def _write(
    uow: UnitOfWork[LifecycleStore],
    results: list[_Result],
    ctx: Context,
) -> int:
    store = uow.store
    lineages = {
        (r.row.customer_id, t.key): _lineage(r.row.customer_id, t)
        for r in results for t in r.step.transitions
    }
    taken = await store.lineage_counts(list(lineages.values()))
    changes: list[Written] = []
    outputs: list[StageChanged] = []
    announced = 0
    for r in results:
        row, step, withdrawn, late = r.row, r.step, r.withdrawn, r.late
        cid = row.customer_id
        written = Written(
            row=row,
            position=step.position,
            base=step.captured or r.base,
            pending_from=r.pending_from,
            # A customer with a waiting fact before its next threshold is found again by
            # the waiting sweep once that fact applies (the due sweep would find it early
            # and could not move it).
            next_due_at=next_due(step.position, ctx.rules, waiting_from=r.pending_from),
            log_start=step.captured.at if step.captured is not None else r.log_start,
        )
        seq = row.history_seq
        if withdrawn:
            seq += 1
            correction = _correction(row, step, withdrawn, late, seq)
            written.history.append(correction)
            written.retract += [(event_id, correction["event_id"]) for event_id, _ in withdrawn]
            outputs.append(_output(uow, correction, None))
            if ctx.metrics is not None:
                ctx.metrics.corrections.inc()
                ctx.metrics.retracted.inc(len(withdrawn))
        for t in step.transitions:
            lineage = lineages[(cid, t.key)]
            revision = taken.get(lineage, 0)
            taken[lineage] = revision + 1
            event_id = lineage if revision == 0 else derived_event_id(lineage, "revision", revision)
            seq += 1
            entry = {
                "event_id": event_id, "customer_id": cid, "seq": seq, "kind": "transition",
                "from_stage": t.from_stage, "to_stage": t.to_stage, "rule": t.rule,
                "evidence": t.evidence, "transition_at": t.transition_at, "lineage": lineage,
                "cause": UUID(t.cause) if t.cause else None, "retracted_by": None,
            }
            written.history.append(entry)
            outputs.append(_output(uow, entry, t.cause))
            announced += 1
            if ctx.metrics is not None:
                ctx.metrics.transitions.labels(t.from_stage or "none", t.to_stage, t.rule).inc()
        changes.append(written)
    await store.write(changes)
    for event in outputs:
        await uow.emit(event, OUTPUT_TOPICS["lifecycle_stages"])
    return announced


def _lineage(customer_id: str, t: Transition) -> UUID:
    # Deterministic by customer, rule (and the stage it leads to) and event time: a replay
    # re-derives the same id, and every consumer's inbox drops a re-published copy.
    return derived_event_id(
        "stage.changed", customer_id, t.to_stage, t.rule, t.transition_at.isoformat()
    )


def _correction(
    row: CustomerRow, step: Step, withdrawn: list[tuple[UUID, Transition]], late: list[Fact],
    seq: int,
) -> dict[str, Any]:
    """The notice that announced transitions no longer hold: from the stage consumers were
    told, to the stage the corrected history has where the two part."""
    first_new = step.transitions[0] if step.transitions else None
    back_to = (first_new.from_stage if first_new else step.position.stage) or (
        first_new.to_stage if first_new else None
    )
    event_id = derived_event_id("stage.changed", row.customer_id, CORRECTION_RULE,
                                *(str(e) for e, _ in withdrawn))
    evidence = {
        "retracted": [
            {"event_id": str(e), "from": t.from_stage, "to": t.to_stage, "rule": t.rule,
             "transition_at": t.transition_at.isoformat()}
            for e, t in withdrawn
        ],
        "late_facts": [
            {"event_id": f.event_id, "kind": f.kind, "occurred_at": f.at.isoformat()}
            for f in sorted(late, key=Fact.sort_key)[:20]
        ],
        "corrected": [
            {"from": t.from_stage, "to": t.to_stage, "rule": t.rule,
             "transition_at": t.transition_at.isoformat()}
            for t in step.transitions
        ],
    }
    return {
        "event_id": event_id, "customer_id": row.customer_id, "seq": seq, "kind": "correction",
        "from_stage": row.stage, "to_stage": back_to, "rule": CORRECTION_RULE,
        "evidence": evidence, "transition_at": withdrawn[0][1].transition_at,
        "lineage": event_id, "cause": UUID(late[0].event_id) if late else None,
        "retracted_by": None,
    }


def _output(
    uow: UnitOfWork[LifecycleStore], entry: dict[str, Any], cause: str | None
) -> StageChanged:
    return StageChanged(
        event_id=entry["event_id"],
        customer_id=entry["customer_id"],
        occurred_at=entry["transition_at"],
        source=uow.settings.source_id,
        causation_id=UUID(cause) if cause else entry.get("cause"),
        payload=StageChange(
            from_stage=Stage(entry["from_stage"]) if entry["from_stage"] else None,
            to_stage=Stage(entry["to_stage"]),
            rule=entry["rule"],
            evidence=entry["evidence"],
            transition_at=entry["transition_at"],
        ),
    )

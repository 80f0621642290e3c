"""Lifecycle on real Kafka and PostgreSQL: stages from profile updates, scores, account and
feedback events; the sweeper ages silent customers in event time; the REST surface."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.lifecycle.domain import DEFAULT_RULES
from shared import events as ev
from shared.kit import partition_of
from tests.support.platform import Namespace, RunningService, eventually, new_namespace, token

T0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
IDS = uuid.UUID("5b0f3c9e-1c3a-4d7e-9b1e-0c2f7a6d4e11")
PROFILE_TOPIC = "tenure.profile-updates.v1"
SCORES_TOPIC = "tenure.churn-scores.v1"
CUSTOMERS_TOPIC = "tenure.customers.v1"
FEEDBACK_TOPIC = "tenure.feedback.v1"
STAGES_TOPIC = "tenure.lifecycle-stages.v1"
FAST = {"idle_partition_seconds": 0.5, "sweep_interval_seconds": 0.2}


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def same_partition(prefix: str, count: int, partitions: int = 3) -> list[str]:
    """`count` customer ids whose events share one partition (one partition watermark)."""
    first = f"{prefix}-0"
    wanted = partition_of(first, partitions)
    found = [first]
    n = 1
    while len(found) < count:
        cid = f"{prefix}-{n}"
        if partition_of(cid, partitions) == wanted:
            found.append(cid)
        n += 1
    return found


def _id(cid: str, what: str, at: datetime) -> uuid.UUID:
    return uuid.uuid5(IDS, f"{cid}|{what}|{at.isoformat()}")


def snapshot(cid: str, at: datetime, *, last_activity: datetime | None = None,
             products: dict[str, int] | None = None, **features: float) -> ev.ProfileUpdated:
    """profile.updated for a customer who, by default, transacts regularly."""
    regular = {"frequency_90": 12.0, "frequency_30": 4.0, "active_days_30": 8.0,
               "sessions_30": 6.0, "sessions_prev_30": 6.0, "engagement_trend": 0.0}
    return ev.ProfileUpdated(
        event_id=_id(cid, "snapshot", at), customer_id=cid, occurred_at=at,
        source="tenure-profile",
        payload=ev.ProfileSnapshot(
            as_of=at, registered=True, first_activity_at=T0,
            last_activity_at=last_activity or at, transaction_count=5,
            products={"current": 1} if products is None else products,
            total_balance=Decimal("1500.00"), features={**regular, **features},
        ),
    )


def scored(cid: str, at: datetime, probability: float) -> ev.ChurnScored:
    return ev.ChurnScored(
        event_id=_id(cid, "score", at), customer_id=cid, occurred_at=at,
        source="tenure-scoring",
        payload=ev.ChurnScore(probability=probability, band="critical", horizon_days=90,
                              model="test", model_version=1, as_of=at),
    )


def account(cid: str, at: datetime, kind: str = "opened", account_id: str = "A",
            product: str = "current") -> ev.EnvelopeBase:
    model = ev.AccountOpened if kind == "opened" else ev.AccountClosed
    return model(
        event_id=_id(cid, f"{kind}:{account_id}", at), customer_id=cid, occurred_at=at,
        source="core-banking",
        payload=ev.AccountChange(account_id=f"{cid}-{account_id}", product_type=product,
                                 currency="EUR"),
    )


def complaint(cid: str, at: datetime, kind: str = "complaint_opened") -> ev.FeedbackSubmitted:
    return ev.FeedbackSubmitted(
        event_id=_id(cid, kind, at), customer_id=cid, occurred_at=at, source="complaint-desk",
        payload=ev.FeedbackDetails(kind=kind, complaint_id=f"{cid}-K1", category="service"),
    )


TOPIC_OF = {"profile.updated": PROFILE_TOPIC, "churn.scored": SCORES_TOPIC,
            "account.opened": CUSTOMERS_TOPIC, "account.closed": CUSTOMERS_TOPIC,
            "feedback.submitted": FEEDBACK_TOPIC}


async def publish(ns: Namespace, *events: ev.EnvelopeBase) -> None:
    for event in events:
        await ns.publish(TOPIC_OF[event.event_type], event)


async def stage_of(svc: RunningService, cid: str) -> dict[str, Any] | None:
    r = await svc.get(f"/v1/customers/{cid}/stage")
    return r.json() if r.status_code == 200 else None


async def until_stage(
    svc: RunningService, cid: str, stage: str, *, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await stage_of(svc, cid)
        return found if found and found["stage"] == stage else None

    return await eventually(probe, timeout=timeout, what=f"{cid} in {stage}")


async def settled(svc: RunningService) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = (await svc.get("/v1/sweeper")).json()
        return status if status["settled"] else None

    return await eventually(probe, what="lifecycle settled")


def moves(view: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(h["from"], h["to"], h["rule"], h["transition_at"]) for h in view["history"]]


async def stage_events(ns: Namespace) -> list[dict[str, Any]]:
    return [m["value"] for m in await ns.read_topic(STAGES_TOPIC)]


@contextlib.asynccontextmanager
async def lifecycle_namespace() -> AsyncIterator[Namespace]:
    """A namespace with lifecycle's schema only (faster than the whole platform's)."""
    namespace = new_namespace()
    await namespace.setup(("lifecycle",))
    try:
        yield namespace
    finally:
        await namespace.teardown()


@pytest.fixture
async def lc_ns() -> AsyncIterator[Namespace]:
    async with lifecycle_namespace() as namespace:
        yield namespace


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ tests


async def test_stages_in_event_time_with_reasons_and_the_sweeper_ages_silence(
    lc_ns: Namespace, tmp_path: Path
) -> None:
    ns = lc_ns
    rules_file = tmp_path / "lifecycle.yaml"
    rules_file.write_text(DEFAULT_RULES.read_text())
    quiet, risky, closer, clock = same_partition("LC", 4)
    async with ns.service("lifecycle", rules_file=str(rules_file), **FAST) as svc:
        await publish(
            ns,
            account(quiet, day(0)), snapshot(quiet, day(0)),
            account(risky, day(0)), snapshot(risky, day(0)), snapshot(risky, day(20)),
            scored(risky, day(21), 0.82),
            account(closer, day(0)), account(closer, day(0), account_id="B", product="card"),
            snapshot(closer, day(1), products={"current": 1, "card": 1}),
            complaint(closer, day(2)),
            account(closer, day(5), "closed"), account(closer, day(6), "closed", "B", "card"),
        )
        at_risk = await until_stage(svc, risky, "at_risk")
        assert at_risk["since"] == iso(day(21)) and at_risk["rule"] == "at_risk_churn_score"
        assert at_risk["evidence"]["churn_probability"] == 0.82
        churned = await until_stage(svc, closer, "churned")
        assert churned["since"] == iso(day(6)) and churned["rule"] == "all_accounts_closed"
        assert (await stage_of(svc, quiet))["stage"] == "onboarding"

        # Another customer's activity moves the partition's event time 120 days on: the
        # sweeper finds the silent customer and stamps dormancy at last activity + 90 days.
        await publish(ns, snapshot(clock, day(120)))
        dormant = await until_stage(svc, quiet, "dormant")
        assert moves(dormant) == [
            (None, "prospect", "first_seen", iso(day(0))),
            ("prospect", "onboarding", "first_product", iso(day(0))),
            ("onboarding", "dormant", "dormant_after_inactivity", iso(day(90))),
        ]
        assert dormant["evidence"] == {"inactive_days": 90.0, "dormant_days": 90}
        assert dormant["next_review_at"] == iso(day(270))
        status = await settled(svc)
        assert status["due"] == 0

        # The closer's complaint would have come due on day 16, but they had already left.
        assert [h["to"] for h in churned["history"]] == ["prospect", "onboarding", "churned"]

        # On the wire: one stage.changed per transition, ids derived from customer, rule and
        # event time, stamped with the event time it became true.
        async def announced() -> list[dict[str, Any]] | None:
            found = [e for e in await stage_events(ns) if e["customer_id"] == quiet]
            return found if len(found) == 3 else None

        wire = await eventually(announced, what="the quiet customer's stage events")
        last = wire[-1]
        assert last["occurred_at"] == iso(day(90))
        assert last["payload"]["transition_at"] == iso(day(90))
        assert last["payload"]["from"] == "onboarding" and last["payload"]["to"] == "dormant"
        assert last["event_id"] == str(ev.derived_event_id(
            "stage.changed", quiet, "dormant", "dormant_after_inactivity", day(90).isoformat()))
        assert last["causation_id"] is None  # time-driven: no event caused it

        # Counts, the funnel over a period of event time, and validation of the period.
        # (The risky customer went quiet after day 20: dormant on day 110. The clock's
        # customer, a customer since day 0 first seen on day 120, is active at once.)
        counts = (await svc.get("/v1/stages")).json()
        assert {s: n for s, n in counts["stages"].items() if n} == {
            "dormant": 2, "churned": 1, "active": 1}
        funnel = (await svc.get("/v1/stages/transitions", params={
            "from": "onboarding", "since": iso(day(1)), "until": iso(day(200))})).json()
        assert {(f["from"], f["to"]): f["count"] for f in funnel["flows"]} == {
            ("onboarding", "at_risk"): 1, ("onboarding", "churned"): 1,
            ("onboarding", "dormant"): 1, ("onboarding", "active"): 1,
        }
        assert funnel["entered"] == {"at_risk": 1, "churned": 1, "dormant": 1, "active": 1}
        naive = await svc.get("/v1/stages/transitions", params={"since": "2025-01-01T00:00:00"})
        assert naive.status_code == 422 and "since lacks a UTC offset" in naive.json()["detail"]
        export = (await svc.get("/v1/stages/history", params={"limit": 2})).json()
        assert len(export["items"]) == 2 and export["next"] == export["items"][-1]["customer_id"]

        # Rules: listed; reload needs lifecycle:admin; an invalid file is refused with file,
        # rule and reason, and the rules in force stay.
        listed = (await svc.get("/v1/rules")).json()
        assert listed["file"] == "lifecycle.yaml"
        assert any(r["name"] == "dormant_after_inactivity" for r in listed["rules"])
        admin = {"Authorization": f"Bearer {token('lifecycle:admin')}"}
        assert (await svc.client.post("/v1/rules:reload", headers={
            "Authorization": f"Bearer {token('lifecycle:read')}"})).status_code == 403
        rules_file.write_text(rules_file.read_text().replace(
            "when: inactive_days >= dormant_days", "when: inactive_days >= dormant_dayz"))
        refused = await svc.client.post("/v1/rules:reload", headers=admin)
        assert refused.status_code == 422
        assert ("rules not reloaded: lifecycle.yaml, rule 'dormant_after_inactivity': line 1, "
                "col 18: unknown name 'dormant_dayz' (did you mean 'dormant_days'?)"
                ) in refused.json()["detail"]
        assert (await svc.get("/v1/rules")).json()["version"] == listed["version"]
        rules_file.write_text(DEFAULT_RULES.read_text().replace("dormant_days: 90",
                                                                "dormant_days: 60"))
        reloaded = await svc.client.post("/v1/rules:reload", headers=admin)
        assert reloaded.status_code == 200 and reloaded.json()["version"] != listed["version"]
        assert (await svc.get("/v1/rules")).json()["parameters"]["dormant_days"] == 60
        metrics = (await svc.client.get("/metrics")).text
        assert "tenure_lifecycle_transitions_total" in metrics
        assert "tenure_lifecycle_swept_customers_total" in metrics


async def test_erasure_removes_the_customer_from_lifecycle(lc_ns: Namespace) -> None:
    ns = lc_ns
    async with ns.service("lifecycle", **FAST) as svc:
        await publish(ns, account("LC-ERASE", day(0)), snapshot("LC-ERASE", day(0)))
        await until_stage(svc, "LC-ERASE", "onboarding")
        await ns.publish(CUSTOMERS_TOPIC, ev.CustomerErased(
            event_id=uuid.uuid4(), customer_id="LC-ERASE", occurred_at=day(1),
            source="tenure-profile", payload=ev.ErasureRequest(requested_by="dpo")))

        async def gone() -> bool:
            return (await svc.get("/v1/customers/LC-ERASE/stage")).status_code == 404

        await eventually(gone, what="the erased customer's stage gone")
        left = await ns.sql("lifecycle", "SELECT (SELECT count(*) FROM facts) + "
                            "(SELECT count(*) FROM stage_history) + "
                            "(SELECT count(*) FROM customer_stages)")
        assert left[0][0] == 0
        # A replay of the customer's old events does not bring them back.
        await publish(ns, snapshot("LC-ERASE", day(2)))
        await publish(ns, snapshot("LC-OTHER", day(3)))
        await until_stage(svc, "LC-OTHER", "onboarding")
        assert (await svc.get("/v1/customers/LC-ERASE/stage")).status_code == 404


async def test_a_history_written_before_facts_were_kept_is_continued_not_rewritten() -> None:
    """Rows from revision 0001 (the walking skeleton) have a stage and a history but no walk
    position: their history is the starting point, and nothing of it is withdrawn."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from services.lifecycle.bootstrap import MIGRATIONS
    from shared.db import make_engine

    ns = new_namespace()
    await ns.setup(())  # topics and a producer; lifecycle's schema is migrated below
    settings = ns.settings("lifecycle")
    engine = make_engine(settings, pool_size=1)

    async def upgrade(revision: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"'))

            def run(sync_conn: Any) -> None:
                cfg = Config()
                cfg.set_main_option("script_location", str(MIGRATIONS))
                cfg.attributes["connection"] = sync_conn
                cfg.attributes["schema"] = settings.db_schema
                command.upgrade(cfg, revision)

            await conn.run_sync(run)

    try:
        await upgrade("0001")
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO customer_stages (customer_id, stage, stage_entered_at, rule) "
                "VALUES ('LC-OLD', 'onboarding', :t, 'first_product_or_activity')"), {"t": day(0)})
            for to, rule, before in (("onboarding", "first_product_or_activity", "prospect"),
                                     ("prospect", "registered", None)):
                await conn.execute(text(
                    "INSERT INTO stage_history (event_id, customer_id, from_stage, to_stage, "
                    "rule, evidence, transition_at) VALUES (:e, 'LC-OLD', :f, :to, :r, '{}', :t)"),
                    {"e": uuid.uuid4(), "f": before, "to": to, "r": rule, "t": day(0)})
        await upgrade("head")
        async with ns.service("lifecycle", **FAST) as svc:
            await publish(ns, snapshot("LC-OLD", day(10)),
                          snapshot("LC-OLD", day(200), last_activity=day(10)))
            view = await until_stage(svc, "LC-OLD", "dormant")
            await settled(svc)
            view = await stage_of(svc, "LC-OLD")
            assert view is not None and view["corrections"] == []
            assert moves(view) == [
                (None, "prospect", "registered", iso(day(0))),
                ("prospect", "onboarding", "first_product_or_activity", iso(day(0))),
                ("onboarding", "at_risk", "onboarding_not_activated", iso(day(90))),
                ("at_risk", "dormant", "dormant_after_inactivity", iso(day(100))),
            ]
    finally:
        await engine.dispose()
        await ns.teardown()

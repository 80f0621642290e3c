"""A seeded synthetic retail bank: customers, products, behaviour, churn, and its ground truth.

Pure generation (no I/O): `simulate(config)` yields contract events in global event-time
order and `ground_truth(config)` says who churns, when and why. The same seed gives the same
events, byte for byte.

Behaviour, in banking terms:
- Value is skewed: wealth is log-normal, so roughly the top 20% hold most balances.
- Archetypes: loyal customers who stay, casual ones with thin activity who also stay, and
  churners who leave for a reason with a hidden, gradual, noisy decline first:
  fee shock (a fee, then falling use), poor service (a complaint, a detractor score),
  competitor offer (salary redirected, balances drawn down), life event (sharp drop) and
  silent leavers (no warning at all). Some churners close every account; the others just
  go quiet while bank fees and interest keep posting.
- `purchases` profile: only `transaction.posted`, irregular card purchases with long gaps:
  the shape of a retailer's or card issuer's raw log. Each customer buys at their own rate
  with weekly and December seasonality; after any purchase they may drop out for good, and
  many fade (longer gaps) before they do; a few come back after long breaks.

Response to engagement (`full` profile): a message that reaches a customer (`Treatments`)
may keep a customer who was going to leave: with probability `offer_effects[template]`,
drawn from the customer's own seeded response stream, the leaving is called off from the
day the message arrived (the decline stops, activity returns to normal, no account closes).
That is the known, seeded effect the uplift measurement must recover. Without treatments
the events are exactly those of the same seed without this feature. `Simulation` advances
the bank day-aligned step by step, so the platform's decisions can reach its customers
between steps (a closed loop, docs/evaluation.md).
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared import events as ev

SIM_NAMESPACE = uuid.UUID("2b0d7c1e-94a4-4c59-8f0e-6b1c5a7d3e21")

ARCHETYPES_FULL = (
    # name, share, churns
    ("loyal", 0.56, False),
    ("casual", 0.14, False),
    ("fee_shock", 0.06, True),
    ("poor_service", 0.07, True),
    ("competitor_offer", 0.08, True),
    ("life_event", 0.04, True),
    ("silent_leaver", 0.05, True),
)
SEGMENTS = (("retail", 0.80), ("premier", 0.12), ("private", 0.03), ("sme", 0.05))
TIME_ZONES = ("Europe/London", "Europe/Berlin", "Asia/Shanghai", "Asia/Hong_Kong", "America/New_York")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class SimConfig:
    customers: int = 1000
    seed: int = 1
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    days: int = 540
    profile: str = "full"  # or "purchases"
    id_prefix: str = "C"
    currency: str = "EUR"
    # Share of customers already customers at `start` (the rest join over the first half).
    existing_share: float = 0.6
    # Response to engagement: template -> the chance that a message keeps a customer who was
    # going to leave (the relative cut in leaving); templates not listed have no effect.
    offer_effects: tuple[tuple[str, float], ...] = ()

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass
class Persona:
    customer_id: str
    index: int
    archetype: str
    churns: bool
    segment: str
    wealth: float
    birth_date: date
    time_zone: str
    joined_at: datetime
    churn_at: datetime | None
    decline_days: float
    closes_accounts: bool
    has_salary: bool
    salary: float
    purchase_rate: float  # per day
    session_rate: float  # per day
    ticket: float  # typical purchase amount
    products: list[str] = field(default_factory=list)
    consent: dict[tuple[str, str], bool] = field(default_factory=dict)
    returns_after: datetime | None = None


@dataclass
class Received:
    """A message that reached a simulated customer, and (once the simulator got to that day)
    how the customer responded."""

    template: str
    known_at: datetime  # from this moment the customer has it (a day boundary in a loop)
    playbook: str | None = None
    decided_at: datetime | None = None
    effective_day: datetime | None = None
    draw: float | None = None
    saved: bool | None = None
    would_have_left_at: datetime | None = None

    def fresh(self) -> Received:
        """The same message, not yet responded to (to replay a customer's world)."""
        return replace(self, effective_day=None, draw=None, saved=None, would_have_left_at=None)


class Treatments:
    """What engagement delivered to whom. The closed loop fills it between simulation steps;
    the simulator reads it day by day."""

    def __init__(self, received: list[tuple[str, Received]] | None = None) -> None:
        self._by_customer: dict[str, list[Received]] = defaultdict(list)
        for customer_id, r in received or []:
            self._by_customer[customer_id].append(r)

    def receive(self, customer_id: str, template: str, known_at: datetime, *,
                playbook: str | None = None, decided_at: datetime | None = None) -> Received:
        r = Received(template, known_at, playbook, decided_at)
        self._by_customer[customer_id].append(r)
        return r

    def of(self, customer_id: str) -> list[Received]:
        return self._by_customer.get(customer_id, [])

    def customers(self) -> list[str]:
        return sorted(self._by_customer)


def _respond(config: SimConfig, p: Persona, received: list[Received], day: datetime) -> None:
    """Messages that arrived by `day` take effect; each draws from its own seeded stream
    (never from the behaviour streams, so untreated customers are untouched)."""
    effects = dict(config.offer_effects)
    for r in sorted(received, key=lambda r: (r.known_at, r.template)):
        if r.effective_day is not None or r.known_at > day:
            continue
        draw = _rng(config, p.index, f"response:{r.template}:{r.known_at.isoformat()}").random()
        r.effective_day, r.draw = day, draw
        r.saved = p.churn_at is not None and p.churn_at > day and draw < effects.get(
            r.template, 0.0)
        if r.saved:
            r.would_have_left_at = p.churn_at
            p.churn_at, p.churns, p.closes_accounts = None, False, False


def _rng(config: SimConfig, index: int, stream: str) -> random.Random:
    return random.Random(f"{config.seed}:{index}:{stream}")


def _pick(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    x = rng.random()
    acc = 0.0
    for row in table:
        acc += row[1]
        if x < acc:
            return row
    return table[-1]


def persona(config: SimConfig, index: int) -> Persona:
    """Who customer `index` is: drawn from their own seeded stream, so order never matters."""
    rng = _rng(config, index, "persona")
    cid = f"{config.id_prefix}{index:06d}"
    if config.profile == "purchases":
        return _purchase_persona(config, index, cid, rng)
    archetype, _, churns = _pick(rng, ARCHETYPES_FULL)
    segment = _pick(rng, SEGMENTS)[0]
    wealth_mu = {"retail": 8.0, "premier": 10.2, "private": 12.0, "sme": 9.5}[segment]
    wealth = math.exp(rng.gauss(wealth_mu, 1.25))
    if rng.random() < config.existing_share:
        joined = config.start - timedelta(days=rng.uniform(30, 3650))
    else:
        joined = config.start + timedelta(days=rng.uniform(0, config.days * 0.5))
    churn_at = None
    decline = 0.0
    if churns:
        earliest = max(joined, config.start) + timedelta(days=45)
        span = (config.end - earliest).total_seconds()
        if span > 0:
            churn_at = earliest + timedelta(seconds=rng.uniform(0, span * 1.15))
        decline = {
            "fee_shock": rng.uniform(20, 60),
            "poor_service": rng.uniform(30, 90),
            "competitor_offer": rng.uniform(40, 120),
            "life_event": rng.uniform(5, 25),
            "silent_leaver": rng.uniform(0, 4),
        }[archetype]
    activity = rng.lognormvariate(0, 0.6) * (0.25 if archetype == "casual" else 1.0)
    products = ["current"]
    for product, base in (("card", 0.7), ("savings", 0.35), ("loan", 0.15), ("insurance", 0.2),
                          ("mortgage", 0.08), ("investment", 0.05)):
        boost = 0.25 if product in ("savings", "investment") and wealth > 40_000 else 0.0
        if rng.random() < base + boost:
            products.append(product)
    consent = {
        ("email", "marketing"): rng.random() < 0.6,
        ("sms", "marketing"): rng.random() < 0.4,
        ("push", "marketing"): rng.random() < 0.5,
        ("email", "service"): rng.random() < 0.92,
        ("sms", "service"): rng.random() < 0.85,
    }
    return Persona(
        customer_id=cid,
        index=index,
        archetype=archetype,
        churns=churn_at is not None,
        segment=segment,
        wealth=wealth,
        birth_date=date(1946, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60)),
        time_zone=rng.choice(TIME_ZONES),
        joined_at=joined,
        churn_at=churn_at,
        decline_days=decline,
        closes_accounts=churn_at is not None and rng.random() < 0.55,
        has_salary=rng.random() < (0.25 if archetype == "casual" else 0.72),
        salary=round(rng.lognormvariate(7.8, 0.45), 2),
        purchase_rate=0.22 * activity,
        session_rate=0.18 * activity * rng.uniform(0.3, 1.6),
        ticket=rng.lognormvariate(3.3, 0.7),
        products=products,
        consent=consent,
    )


def _purchase_persona(config: SimConfig, index: int, cid: str, rng: random.Random) -> Persona:
    # Heterogeneous purchase rates (gamma) and a per-purchase dropout chance (beta): the
    # buy-till-you-die shape, plus fading before dropout and occasional long breaks.
    rate = rng.gammavariate(0.7, 1 / 9.0)  # mean ~0.08 purchases a day, very skewed
    dropout = rng.betavariate(1.0, 6.0)
    joined = config.start + timedelta(days=rng.uniform(0, config.days * 0.6))
    # Walk the purchase process once to find when (if ever) the customer drops out.
    t = joined
    churn_at = None
    while t < config.end + timedelta(days=365):
        t += timedelta(days=rng.expovariate(max(rate, 1e-4)))
        if rng.random() < dropout:
            churn_at = t
            break
    return Persona(
        customer_id=cid,
        index=index,
        archetype="purchaser",
        churns=churn_at is not None,
        segment="retail",
        wealth=rng.lognormvariate(6, 1.2),
        birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55)),
        time_zone=rng.choice(TIME_ZONES),
        joined_at=joined,
        churn_at=churn_at,
        decline_days=rng.uniform(0, 90) if rng.random() < 0.6 else 0.0,
        closes_accounts=False,
        has_salary=False,
        salary=0.0,
        purchase_rate=rate,
        session_rate=0.0,
        ticket=rng.lognormvariate(3.0, 0.8),
        returns_after=(
            churn_at + timedelta(days=rng.uniform(200, 500))
            if churn_at is not None and rng.random() < 0.08
            else None
        ),
    )


def ground_truth(config: SimConfig) -> Iterator[dict[str, Any]]:
    for i in range(config.customers):
        p = persona(config, i)
        yield {
            "customer_id": p.customer_id,
            "archetype": p.archetype,
            "segment": p.segment,
            "birth_date": p.birth_date.isoformat(),
            "joined_at": p.joined_at.isoformat(),
            "churns": p.churns,
            "churn_at": p.churn_at.isoformat() if p.churn_at else None,
            "decline_starts_at": (
                (p.churn_at - timedelta(days=p.decline_days)).isoformat() if p.churn_at else None
            ),
            "reason": p.archetype if p.churns else None,
            "closes_accounts": p.closes_accounts,
            "wealth": round(p.wealth, 2),
            "returns_at": p.returns_after.isoformat() if p.returns_after else None,
        }


# ------------------------------------------------------------------ event generation


class _Builder:
    """Makes envelopes for one customer with deterministic ids."""

    def __init__(self, config: SimConfig, p: Persona):
        self.config = config
        self.p = p
        self.n = 0

    def _id(self) -> uuid.UUID:
        self.n += 1
        return uuid.uuid5(SIM_NAMESPACE, f"{self.config.seed}:{self.p.customer_id}:{self.n}")

    def envelope(self, model: type[ev.EnvelopeBase], at: datetime, payload: Any) -> ev.EnvelopeBase:
        return model(
            event_id=self._id(),
            customer_id=self.p.customer_id,
            occurred_at=at,
            source="simulator",
            payload=payload,
        )

    def txn(
        self, at: datetime, account: str, product: str, amount: float, direction: str,
        category: str, channel: str, initiated_by: str, balance: float | None,
    ) -> ev.EnvelopeBase:
        return self.envelope(
            ev.TransactionPosted,
            at,
            ev.TransactionDetails(
                account_id=account,
                product_type=product,
                amount=Decimal(f"{max(amount, 0.01):.2f}"),
                currency=self.config.currency,
                direction=direction,
                category=category,
                channel=channel,
                initiated_by=initiated_by,
                balance_after=None if balance is None else Decimal(f"{balance:.2f}"),
            ),
        )


def _activity_multiplier(p: Persona, t: datetime, rng: random.Random) -> float:
    """1.0 for a steady customer; falls through the hidden decline; 0 after churn."""
    if p.churn_at is None:
        return 1.0
    if t >= p.churn_at:
        if p.returns_after is not None and t >= p.returns_after:
            return 0.6
        return 0.0
    if p.decline_days <= 0:
        return 1.0
    start = p.churn_at - timedelta(days=p.decline_days)
    if t < start:
        return 1.0
    progress = (t - start) / (p.churn_at - start)
    level = 1.0 - 0.85 * progress
    return max(0.0, level * rng.uniform(0.6, 1.4))


def _customer_initiated(e: ev.EnvelopeBase) -> bool:
    if isinstance(e, ev.TransactionPosted):
        return e.payload.initiated_by is ev.InitiatedBy.customer
    return isinstance(e, ev.AppClicked | ev.FeedbackSubmitted)


def _silenced(p: Persona, e: ev.EnvelopeBase) -> bool:
    """A churned customer does nothing themselves (the day's draw may straddle the moment)."""
    if p.churn_at is None or e.occurred_at < p.churn_at:
        return False
    if p.returns_after is not None and e.occurred_at >= p.returns_after:
        return False
    return _customer_initiated(e)


def _season(t: datetime) -> float:
    weekday = 1.15 if t.weekday() >= 4 else 0.92
    december = 1.5 if t.month == 12 else 1.0
    return weekday * december


def _at(day: datetime, rng: random.Random, earliest_hour: float = 7, latest_hour: float = 22) -> datetime:
    return day + timedelta(hours=rng.uniform(earliest_hour, latest_hour))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    # Knuth is fine for the small daily rates used here.
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def customer_events(
    config: SimConfig, index: int, treatments: Treatments | None = None
) -> Iterator[ev.EnvelopeBase]:
    """One customer's events in time order (responding to `treatments`, if any)."""
    for item in _customer_stream(config, index, treatments):
        if not isinstance(item, datetime):
            yield item


def _customer_stream(
    config: SimConfig, index: int, treatments: Treatments | None
) -> Iterator[ev.EnvelopeBase | datetime]:
    """Events, and after each simulated day the moment before which every event is out."""
    p = persona(config, index)
    if config.profile == "purchases":
        yield from _purchase_events(config, p)
        return
    rng = _rng(config, index, "events")
    b = _Builder(config, p)
    onboard = max(p.joined_at, config.start)
    yield b.envelope(
        ev.CustomerRegistered,
        onboard,
        ev.CustomerDetails(
            name=f"Sim Customer {p.index}",
            phone=f"+44 7700 {900000 + p.index:06d}",
            email=f"customer{p.index}@example.test",
            national_id=f"SIM{p.index:08d}",
            birth_date=p.birth_date,
            time_zone=p.time_zone,
            language="en",
            segment=p.segment,
            rm_id=f"RM{p.index % 25:03d}" if p.segment in ("premier", "private", "sme") else None,
        ),
    )
    for (channel, purpose), granted in sorted(p.consent.items()):
        yield b.envelope(
            ev.ConsentChanged, onboard + timedelta(minutes=1),
            ev.ConsentChange(channel=channel, purpose=purpose, granted=granted),
        )
    accounts = {prod: f"{p.customer_id}-{prod[:3].upper()}" for prod in p.products}
    balances = {prod: 0.0 for prod in p.products}
    balances["current"] = p.wealth * 0.15
    if "savings" in balances:
        balances["savings"] = p.wealth * 0.75
    if "investment" in balances:
        balances["investment"] = p.wealth * 0.5
    for k, prod in enumerate(p.products):
        yield b.envelope(
            ev.AccountOpened, onboard + timedelta(minutes=2 + k),
            ev.AccountChange(
                account_id=accounts[prod], product_type=prod, currency=config.currency,
                margin_rate=Decimal({"current": "0.0150", "savings": "0.0080", "card": "0.1200",
                                     "loan": "0.0450", "mortgage": "0.0180",
                                     "insurance": "0.0600", "investment": "0.0100"}[prod]),
            ),
        )

    closed = False
    fee_posted = complaint_open = False
    pending: list[tuple[datetime, int, int, ev.EnvelopeBase]] = []
    pushed = 0
    day = datetime(onboard.year, onboard.month, onboard.day, tzinfo=UTC) + DAY
    while day < config.end and not closed:
        if treatments is not None:
            _respond(config, p, treatments.of(p.customer_id), day)
        mult = _activity_multiplier(p, day, rng)
        in_decline = (
            p.churn_at is not None and p.decline_days > 0
            and day >= p.churn_at - timedelta(days=p.decline_days) and day < p.churn_at
        )
        todays: list[ev.EnvelopeBase] = []
        # Salary on the 25th, unless a competitor's offer has redirected it.
        if p.has_salary and day.day == 25:
            redirected = p.archetype == "competitor_offer" and (in_decline or mult == 0.0)
            if not redirected and not (mult == 0.0 and p.archetype != "life_event"):
                balances["current"] += p.salary
                todays.append(b.txn(day + timedelta(hours=6), accounts["current"], "current",
                                    p.salary, "credit", "salary", "batch", "bank",
                                    balances["current"]))
        # Customer-initiated spending and transfers.
        n_purchases = _poisson(rng, p.purchase_rate * mult * _season(day))
        for _ in range(n_purchases):
            amount = rng.lognormvariate(math.log(p.ticket), 0.6)
            product = "card" if "card" in accounts and rng.random() < 0.7 else "current"
            balances[product] -= amount
            todays.append(b.txn(_at(day, rng), accounts[product], product, amount, "debit",
                                "card_purchase", rng.choice(("pos", "pos", "mobile", "web")),
                                "customer", balances[product]))
        if mult > 0 and rng.random() < 0.06 * mult:
            amount = p.salary * rng.uniform(0.1, 0.4)
            balances["current"] -= amount
            todays.append(b.txn(_at(day, rng), accounts["current"], "current", amount, "debit",
                                "bill", "web", "customer", balances["current"]))
        if in_decline and p.archetype == "competitor_offer" and rng.random() < 0.12:
            # Balances drawn down to the competitor.
            source = "savings" if "savings" in balances and balances["savings"] > 100 else "current"
            amount = max(balances[source], 0) * rng.uniform(0.15, 0.45)
            if amount > 1:
                balances[source] -= amount
                todays.append(b.txn(_at(day, rng), accounts[source], source, amount, "debit",
                                    "transfer", "mobile", "customer", balances[source]))
        # App sessions.
        for _ in range(_poisson(rng, p.session_rate * mult)):
            when = _at(day, rng, 6, 23)
            session = f"s{b.n}"
            todays.append(b.envelope(ev.AppClicked, when, ev.AppClick(
                session_id=session, action="login", screen="home",
                channel=rng.choice(("mobile", "mobile", "web")))))
            action = "view_page"
            if in_decline and rng.random() < 0.3:
                action = rng.choice(("help_page", "close_account_page"))
            elif rng.random() < 0.2:
                action = "transfer"
            todays.append(b.envelope(ev.AppClicked, when + timedelta(seconds=40), ev.AppClick(
                session_id=session, action=action, screen=action, channel="mobile")))
        # Reason-specific signals.
        if in_decline and p.archetype == "fee_shock" and not fee_posted:
            fee_posted = True
            balances["current"] -= 35.0
            todays.append(b.txn(day + timedelta(hours=3), accounts["current"], "current", 35.0,
                                "debit", "fee", "batch", "bank", balances["current"]))
        if in_decline and p.archetype == "poor_service" and not complaint_open:
            complaint_open = True
            todays.append(b.envelope(ev.FeedbackSubmitted, _at(day, rng), ev.FeedbackDetails(
                kind="complaint_opened", complaint_id=f"{p.customer_id}-CMP1",
                category="service", severity="high", text="Nobody called me back.")))
            todays.append(b.envelope(ev.FeedbackSubmitted, _at(day + 3 * DAY, rng),
                                     ev.FeedbackDetails(kind="nps", score=rng.randint(0, 4))))
        if not in_decline and mult > 0 and rng.random() < 0.004:
            score = rng.choice((7, 8, 9, 9, 10, 10)) if p.archetype in ("loyal", "casual") \
                else rng.randint(3, 9)
            todays.append(b.envelope(ev.FeedbackSubmitted, _at(day, rng),
                                     ev.FeedbackDetails(kind="nps", score=score)))
        # Bank-initiated postings continue regardless of the customer (not activity).
        if day.day == 1 and "savings" in balances and balances["savings"] > 0:
            interest = balances["savings"] * 0.008 / 12
            balances["savings"] += interest
            todays.append(b.txn(day + timedelta(hours=2), accounts["savings"], "savings",
                                interest, "credit", "interest", "batch", "bank",
                                balances["savings"]))
        if day.day == 1 and day.month in (3, 6, 9, 12):
            balances["current"] -= 4.5
            todays.append(b.txn(day + timedelta(hours=2), accounts["current"], "current", 4.5,
                                "debit", "fee", "batch", "bank", balances["current"]))
        # Churn with closure: every account closed on the churn date.
        if p.churn_at is not None and p.closes_accounts and day <= p.churn_at < day + DAY:
            for k, prod in enumerate(p.products):
                todays.append(b.envelope(ev.AccountClosed, p.churn_at + timedelta(minutes=k),
                                         ev.AccountChange(account_id=accounts[prod],
                                                          product_type=prod,
                                                          currency=config.currency,
                                                          reason=p.archetype)))
            closed = True
        # Some of today's events lie in the future (a survey days after a complaint): hold
        # them back so the customer's stream stays in event-time order.
        for e in todays:
            if _silenced(p, e):
                continue
            # Ties (same moment) keep the order the day produced them in: deterministic,
            # where object identity (the tie-break before) was not from run to run.
            pushed += 1
            heapq.heappush(pending, (e.occurred_at, b.n, pushed, e))
        day += DAY
        while pending and pending[0][0] < day:
            yield heapq.heappop(pending)[3]
        yield day
    while pending:
        yield heapq.heappop(pending)[3]


def _purchase_events(config: SimConfig, p: Persona) -> Iterator[ev.EnvelopeBase]:
    rng = _rng(config, p.index, "events")
    b = _Builder(config, p)
    account = f"{p.customer_id}-CARD"
    t = p.joined_at
    while t < config.end:
        alive_until = p.churn_at
        if alive_until is not None and t > alive_until:
            if p.returns_after is None or t < p.returns_after:
                if p.returns_after is None:
                    return
                t = p.returns_after
        # Fading: gaps stretch as the dropout approaches.
        rate = p.purchase_rate * _season(t)
        if alive_until is not None and p.decline_days > 0:
            to_go = (alive_until - t).total_seconds() / 86400
            if 0 < to_go < p.decline_days:
                rate *= 0.35 + 0.65 * to_go / p.decline_days
        amount = rng.lognormvariate(math.log(p.ticket), 0.7)
        yield b.txn(t, account, "card", amount, "debit", "card_purchase", "pos", "customer", None)
        t += timedelta(days=rng.expovariate(max(rate, 1e-4)))


def simulate(config: SimConfig) -> Iterator[ev.EnvelopeBase]:
    """Every customer's events, merged in global event-time order (stable by customer)."""
    def keyed(index: int) -> Iterator[tuple[datetime, int, int, ev.EnvelopeBase]]:
        for n, e in enumerate(customer_events(config, index)):
            yield e.occurred_at, index, n, e

    for _, _, _, event in heapq.merge(*(keyed(i) for i in range(config.customers))):
        if event.occurred_at < config.end:
            yield event


class Simulation:
    """The bank advanced in steps: `advance(until)` returns every event before `until` (a UTC
    midnight) in the same global order as `simulate`, having simulated each customer exactly
    through the day before it. Messages put into `treatments` between steps reach the
    customers from `until` on, so concatenated steps without treatments equal `simulate`."""

    def __init__(self, config: SimConfig, treatments: Treatments | None = None) -> None:
        self.config = config
        self.treatments = treatments if treatments is not None else Treatments()
        self._streams: list[Iterator[ev.EnvelopeBase | datetime] | None] = [
            _customer_stream(config, i, self.treatments) for i in range(config.customers)
        ]
        self._held: list[ev.EnvelopeBase | None] = [None] * config.customers
        self._count = [0] * config.customers

    def advance(self, until: datetime) -> list[ev.EnvelopeBase]:
        if (until - self.config.start) % DAY:
            raise ValueError("a step ends at a whole day after the start")
        out: list[tuple[datetime, int, int, ev.EnvelopeBase]] = []
        for i, stream in enumerate(self._streams):
            held = self._held[i]
            if held is not None:
                if held.occurred_at >= until:
                    continue
                self._held[i] = None
                out.append((held.occurred_at, i, self._count[i], held))
                self._count[i] += 1
            if stream is None:
                continue
            for item in stream:
                if isinstance(item, datetime):
                    if item >= until:
                        break
                    continue
                if item.occurred_at >= until:
                    self._held[i] = item
                    break
                out.append((item.occurred_at, i, self._count[i], item))
                self._count[i] += 1
            else:
                self._streams[i] = None
        out.sort(key=lambda row: row[:3])
        return [e for _, _, _, e in out if e.occurred_at < self.config.end]

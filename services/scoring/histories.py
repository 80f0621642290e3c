"""BG/NBD fitted on the customers' purchase histories, for the champion's structure.

The champion (`BTYDLogisticClassifier`) scores with BG/NBD's structure: a customer buys at
their own rate while alive and may drop out after any repeat purchase. Its four population
parameters (r, alpha: the spread of purchase rates; a, b: the spread of dropout chances)
describe the purchase process, not the label. So they are fitted the way BG/NBD is fitted:
by maximum likelihood on every customer's (x repeat active days, t_x first to last, T first
to now). That needs no labels and is as current as the histories. Labels resolve a horizon
later and teach only what was true then. The learner refits them as labels accumulate
(`ScoringSettings.history_refit_labels`); the labels then teach the rest (one-time
customers, behaviour).

Each customer's activity log is kept in `scores.memory`. One query reads the three figures
from it without loading the logs. "Now" is the latest activity of anyone, the data's own
clock, which is also right in a replay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.btyd import BGNBD

log = logging.getLogger("tenure.scoring.histories")

SECONDS_PER_DAY = 86_400.0
MAX_CUSTOMERS = 50_000  # a larger population is fitted on a seeded sample of this size

# first activity, last activity and active days (the log's days plus those folded away)
_HISTORIES = sa.text("""
    SELECT (memory->>'first_activity')::float8 AS first,
           COALESCE((memory->'last'->>-1)::float8, (memory->>'folded_last')::float8) AS last,
           jsonb_array_length(COALESCE(memory->'days', '[]'::jsonb))
             + COALESCE((memory->>'folded_days')::int, 0) AS days
    FROM scores
    WHERE memory->>'first_activity' IS NOT NULL
""")


@dataclass(frozen=True)
class Histories:
    """Every customer's BG/NBD summary in days, as of `now` (epoch seconds)."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    now: float

    @property
    def customers(self) -> int:
        return int(self.x.size)

    @property
    def repeaters(self) -> int:
        return int(np.count_nonzero(self.x > 0))


def summarise(rows: list[tuple[float, float | None, int]]) -> Histories:
    """(first, last, active days) per customer -> (x, t_x, T) in whole days as of the
    latest activity in `rows`.

    >>> h = summarise([(0.0, 86400.0 * 10, 3), (86400.0 * 5, 86400.0 * 5, 1)])
    >>> h.x.tolist(), h.t_x.tolist(), h.T.tolist()
    ([2.0, 0.0], [10.0, 0.0], [10.0, 5.0])
    """
    first = np.array([r[0] for r in rows], dtype=np.float64)
    last = np.array([r[1] if r[1] is not None else r[0] for r in rows], dtype=np.float64)
    days = np.array([r[2] for r in rows], dtype=np.float64)
    last = np.maximum(last, first)
    now = float(last.max()) if last.size else 0.0
    x = np.maximum(days - 1.0, 0.0)
    t_x = np.floor((last - first) / SECONDS_PER_DAY)
    T = np.floor((now - first) / SECONDS_PER_DAY)
    t_x = np.where(x > 0, t_x, 0.0)
    return Histories(x, t_x, T, now)


async def read_histories(conn: AsyncConnection) -> Histories:
    rows = [(r.first, r.last, int(r.days)) for r in await conn.execute(_HISTORIES)]
    return summarise(rows)


def fit(h: Histories, min_repeaters: int, seed: int = 0) -> dict[str, Any] | None:
    """BG/NBD's maximum-likelihood parameters on the histories (a seeded sample of at most
    `MAX_CUSTOMERS`), with what they were fitted on; None if too few customers have come
    back to say how they drop out."""
    if h.repeaters < min_repeaters:
        return None
    x, t_x, T = h.x, h.t_x, h.T
    if h.customers > MAX_CUSTOMERS:
        pick = np.random.default_rng(seed).choice(h.customers, MAX_CUSTOMERS, replace=False)
        x, t_x, T = x[pick], t_x[pick], T[pick]
    model = BGNBD().fit(x, t_x, T)
    params = model.params
    if not all(np.isfinite(v) and v > 0 for v in params.values()):
        log.warning("BG/NBD fit gave unusable parameters", extra={"params": params})
        return None
    return {**params, "customers": int(x.size), "repeaters": int(np.count_nonzero(x > 0)),
            "converged": model.converged, "now": h.now}

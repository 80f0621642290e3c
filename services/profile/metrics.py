"""Profile's own figures: the customer base by value tier, RFM segment and quadrant."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge

from shared.metrics import StateGauges, set_all

# One scan of the customer table for the three breakdowns (GROUPING SETS); a customer known
# only from activity (no registration yet) counts too, with "none" where a figure is missing.
_CUSTOMER_BASE = sa.text(
    "SELECT GROUPING(value_tier) AS g_tier, GROUPING(rfm_segment) AS g_rfm, "
    "coalesce(value_tier, 'none') AS value_tier, coalesce(rfm_segment, 'none') AS rfm_segment, "
    "coalesce(quadrant, 'none') AS quadrant, count(*) AS n FROM customers "
    "GROUP BY GROUPING SETS ((value_tier), (rfm_segment), (quadrant))"
)


class ProfileMetrics:
    def __init__(self, registry: CollectorRegistry):
        p = "tenure_profile"
        self.registry = registry
        self.by_tier = Gauge(f"{p}_customers_by_tier", "Customers in each value tier",
                             ["value_tier"], registry=registry)
        self.by_rfm_segment = Gauge(f"{p}_customers_by_rfm_segment",
                                    "Customers in each RFM segment", ["rfm_segment"],
                                    registry=registry)
        self.by_quadrant = Gauge(f"{p}_customers_by_quadrant",
                                 "Customers in each capability x willingness quadrant",
                                 ["quadrant"], registry=registry)

    async def refresh(self, conn: Any) -> None:
        rows = (await conn.execute(_CUSTOMER_BASE)).all()
        tiers, segments, quadrants = {}, {}, {}
        for r in rows:
            if r.g_tier == 0:
                tiers[r.value_tier] = r.n
            elif r.g_rfm == 0:
                segments[r.rfm_segment] = r.n
            else:
                quadrants[r.quadrant] = r.n
        set_all(self.by_tier, tiers)
        set_all(self.by_rfm_segment, segments)
        set_all(self.by_quadrant, quadrants)

    def state_gauges(self, engine: Any) -> StateGauges:
        """The loop that keeps these gauges current (a background task)."""
        return StateGauges(engine, self.refresh, service="profile", registry=self.registry)

"""Settings that make scoring's clocks and learner quick and predictable in tests."""

from __future__ import annotations

from typing import Any

# One partition per test, one clock: no lateness, no idle-partition following; labels are
# learnable as soon as their window closes, and the learner and checkpoint polls run often.
FAST: dict[str, Any] = {
    "allowed_lateness_seconds": 0,
    "idle_partition_seconds": 3600,
    "label_settle_seconds": 0,
    "learn_interval_seconds": 0.2,
    "checkpoint_poll_seconds": 0.2,
    "report_settle_seconds": 5,
}

"""Which topics lifecycle reads and which handler takes each event type."""

from services.lifecycle import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

# The primary topic decides which instance sweeps a partition (clock.EventClock.owned) and
# paces the partition's event clock; scores follow it (they are computed from its snapshots),
# raw inputs run ahead of it (profile reads them first).
PRIMARY_TOPIC = OUTPUT_TOPICS["profile_updates"]
FOLLOWER_TOPICS = [OUTPUT_TOPICS["churn_scores"]]
# customers: registrations, account openings and closures, and customer.erased (every
# service honours an erasure); feedback: complaints and their age.
TOPICS = [
    PRIMARY_TOPIC,
    OUTPUT_TOPICS["churn_scores"],
    INPUT_TOPICS["customers"],
    INPUT_TOPICS["feedback"],
]
HANDLERS = handlers.HANDLERS

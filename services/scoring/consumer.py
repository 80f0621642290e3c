"""Which topics scoring reads and which handler takes each event type."""

from services.scoring import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

# Customer-initiated activity, each event at its own time: the evidence labels resolve on,
# and the clock time-driven points are judged by.
ACTIVITY_TOPICS = [
    INPUT_TOPICS["transactions"],
    INPUT_TOPICS["app_events"],
    INPUT_TOPICS["feedback"],
]
# profile updates: the snapshot scores are computed from; customers: customer.erased (every
# service honours an erasure); engagement actions: engagement.decided says who was treated.
TOPICS = [
    OUTPUT_TOPICS["profile_updates"],
    *ACTIVITY_TOPICS,
    INPUT_TOPICS["customers"],
    OUTPUT_TOPICS["engagement_actions"],
]
HANDLERS = handlers.HANDLERS

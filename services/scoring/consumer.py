"""Which topics scoring reads and which handler takes each event type."""

from services.scoring import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

# profile updates: scores and label evidence; customers: customer.erased (every service
# honours an erasure); engagement actions: engagement.decided says who a playbook treated.
TOPICS = [
    OUTPUT_TOPICS["profile_updates"],
    INPUT_TOPICS["customers"],
    OUTPUT_TOPICS["engagement_actions"],
]
HANDLERS = handlers.HANDLERS

"""Which topics engagement reads and which handler takes each event type."""

from services.engagement import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

TOPICS = [
    INPUT_TOPICS["customers"],
    OUTPUT_TOPICS["profile_updates"],
    OUTPUT_TOPICS["lifecycle_stages"],
]
HANDLERS = handlers.HANDLERS

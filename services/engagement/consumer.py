"""Which topics engagement reads and which handler takes each event type."""

from services.engagement import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

TOPICS = [
    INPUT_TOPICS["customers"],
    INPUT_TOPICS["feedback"],
    OUTPUT_TOPICS["profile_updates"],
    OUTPUT_TOPICS["churn_scores"],
    OUTPUT_TOPICS["lifecycle_stages"],
]
HANDLERS = handlers.HANDLERS

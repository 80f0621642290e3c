"""Which topics lifecycle reads and which handler takes each event type."""

from services.lifecycle import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

# customers: for customer.erased (every service honours an erasure).
TOPICS = [OUTPUT_TOPICS["profile_updates"], INPUT_TOPICS["customers"]]
HANDLERS = handlers.HANDLERS

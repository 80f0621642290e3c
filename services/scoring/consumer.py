"""Which topics scoring reads and which handler takes each event type."""

from services.scoring import handlers
from shared.settings import OUTPUT_TOPICS

TOPICS = [OUTPUT_TOPICS["profile_updates"]]
HANDLERS = handlers.HANDLERS

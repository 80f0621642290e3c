"""Which topics profile reads and which handler takes each event type."""

from services.profile import handlers
from shared.settings import INPUT_TOPICS

TOPICS = list(INPUT_TOPICS.values())
HANDLERS = handlers.HANDLERS
AFTER_BATCH = handlers.emit_profile_updates

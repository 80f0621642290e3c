"""Which topics profile reads and which handler takes each event type."""

from services.profile import handlers
from shared.settings import INPUT_TOPICS, OUTPUT_TOPICS

# Inputs, plus the latest churn score and stage so the 360° view is whole.
TOPICS = [*INPUT_TOPICS.values(), OUTPUT_TOPICS["churn_scores"], OUTPUT_TOPICS["lifecycle_stages"]]
HANDLERS = handlers.HANDLERS
AFTER_BATCH = handlers.emit_profile_updates

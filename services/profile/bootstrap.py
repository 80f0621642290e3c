"""Profile's object graph: engine, consumer, relay, store, personal-data protection, tags."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import consumer
from services.profile.metrics import ProfileMetrics
from services.profile.pii import BlindIndex, FieldCipher, Keyring
from services.profile.settings import ProfileSettings
from services.profile.store import ProfileStore, Protection
from services.profile.tags import load_rules
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime
from shared.keys import KeySettings, KeyStore, PiiOpener
from shared.keys import ensure as ensure_key_store
from shared.settings import PlatformSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def protection_from(settings: ProfileSettings) -> Protection:
    return Protection(
        cipher=FieldCipher(Keyring.from_setting(settings.pii_keys)),
        blind=BlindIndex.from_setting(
            settings.blind_index_key, default_country_code=settings.default_country_code
        ),
        tags=load_rules(settings.tags_dir),
        opener=PiiOpener(KeyStore.from_settings(key_settings(settings))),
    )


def key_settings(settings: ProfileSettings) -> KeySettings:
    """The key store's settings (TENURE_MASTER_KEYS) in this service's namespace."""
    return KeySettings(**settings.model_dump(include=set(PlatformSettings.model_fields)))


def bootstrap(settings: ProfileSettings, **overrides: Any) -> ServiceRuntime:
    protection = overrides.pop("protection", None) or protection_from(settings)

    def store_factory(conn: AsyncConnection) -> ProfileStore:
        return ProfileStore(conn, protection)

    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            "after_batch": consumer.AFTER_BATCH,
            **overrides,
        },
    )
    runtime.protection = protection  # type: ignore[attr-defined]
    # The key store's schema exists before the first sealed event or erasure needs it.
    runtime.startup.insert(0, partial(ensure_key_store, key_settings(settings)))
    runtime.extra_tasks.append(ProfileMetrics(runtime.metrics.registry)
                               .state_gauges(runtime.engine).run)
    return runtime

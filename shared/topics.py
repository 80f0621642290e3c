"""Creates the platform's topics with one partition count and their configs (idempotent)."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import ALL_TOPICS, DLQ_TOPIC, INPUT_TOPICS, PlatformSettings

INGRESS_MAX_BYTES = 4 * 1024 * 1024


def topic_configs(name: str) -> dict[str, str]:
    configs = {"cleanup.policy": "delete", "retention.ms": "-1"}
    if name in INPUT_TOPICS.values() or name == DLQ_TOPIC:
        configs["max.message.bytes"] = str(INGRESS_MAX_BYTES)
    return configs


async def ensure_topics(settings: PlatformSettings, names: list[str] | None = None) -> list[str]:
    """Create missing topics; fail loudly if an existing one has another partition count."""
    names = names or ALL_TOPICS
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30_000)
    for attempt in range(30):
        try:
            await admin.start()
            break
        except Exception:
            if attempt == 29:
                raise
            await asyncio.sleep(1)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(n), settings.partitions, 1, topic_configs=topic_configs(n))
            for n in names
            if settings.topic(n) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted, timeout_ms=30_000)
            except TopicAlreadyExistsError:
                pass
            created = [t.name for t in wanted]
        described = await admin.describe_topics([settings.topic(n) for n in names])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != settings.partitions:
                raise RuntimeError(
                    f"topic {topic['topic']} has {count} partitions, the platform uses "
                    f"{settings.partitions}: one customer's events must share a partition index"
                )
    finally:
        await admin.close()
    return created

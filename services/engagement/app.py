"""Engagement service: playbooks under a bank's contact policy."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from services.engagement.api import router
from services.engagement.bootstrap import bootstrap
from services.engagement.settings import EngagementSettings
from shared.app import create_service_app


def create_app(settings: EngagementSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (tests)."""
    return create_service_app(
        settings=settings or EngagementSettings(),
        build_runtime=partial(bootstrap, **overrides),
        routers=[router],
        title="Tenure engagement service",
        description="Retention offers and care messages under the contact policy.",
    )

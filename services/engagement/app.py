"""Engagement service: playbooks under a bank's contact policy."""

from __future__ import annotations

from fastapi import FastAPI

from services.engagement.api import router
from services.engagement.bootstrap import bootstrap
from services.engagement.settings import EngagementSettings
from shared.app import create_service_app


def create_app(settings: EngagementSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or EngagementSettings(),
        build_runtime=bootstrap,
        routers=[router],
        title="Tenure engagement service",
        description="Retention offers and care messages under the contact policy.",
    )

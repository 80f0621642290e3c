"""Profile service: the 360° customer view."""

from __future__ import annotations

from fastapi import FastAPI

from services.profile.api import router
from services.profile.bootstrap import bootstrap
from services.profile.settings import ProfileSettings
from shared.app import create_service_app


def create_app(settings: ProfileSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or ProfileSettings(),
        build_runtime=bootstrap,
        routers=[router],
        title="Tenure profile service",
        description="The 360° customer view: holdings, activity, consent, features.",
    )

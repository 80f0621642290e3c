"""Profile service: the 360° customer view."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from services.profile.api import router
from services.profile.bootstrap import bootstrap
from services.profile.settings import ProfileSettings
from shared.app import create_service_app


def create_app(settings: ProfileSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (tests)."""
    return create_service_app(
        settings=settings or ProfileSettings(),
        build_runtime=partial(bootstrap, **overrides),
        routers=[router],
        title="Tenure profile service",
        description="The 360° customer view: holdings, activity, consent, features.",
    )

"""Lifecycle service: stages in event time and stage-change events."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from services.lifecycle.api import router
from services.lifecycle.bootstrap import bootstrap
from services.lifecycle.settings import LifecycleSettings
from shared.app import create_service_app


def create_app(settings: LifecycleSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (tests)."""
    return create_service_app(
        settings=settings or LifecycleSettings(),
        build_runtime=partial(bootstrap, **overrides),
        routers=[router],
        title="Tenure lifecycle service",
        description="Customer lifecycle stages in event time, with reasons.",
    )

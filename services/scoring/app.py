"""Scoring service: churn risk with reasons, learning online."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from services.scoring.api import router
from services.scoring.bootstrap import bootstrap
from services.scoring.settings import ScoringSettings
from shared.app import create_service_app


def create_app(settings: ScoringSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (tests)."""
    return create_service_app(
        settings=settings or ScoringSettings(),
        build_runtime=partial(bootstrap, **overrides),
        routers=[router],
        title="Tenure scoring service",
        description="Churn early warning: probability within the horizon, band, reasons.",
    )

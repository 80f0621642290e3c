"""Ingress service: partner events in, the bank's internal topics out."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from services.ingress.api import router
from services.ingress.bootstrap import bootstrap
from services.ingress.settings import IngressSettings
from shared.app import create_service_app


def create_app(settings: IngressSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (tests)."""
    return create_service_app(
        settings=settings or IngressSettings(),
        build_runtime=partial(bootstrap, **overrides),
        routers=[router],
        title="Tenure ingress service",
        description="Partner banks' events, checked against their lane and the shared-customer "
        "mapping, re-keyed onto the internal topics; refusals go to the dead-letter topic.",
    )

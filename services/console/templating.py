"""Jinja2 templates (autoescaped) and the filters pages use to show figures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.console.domain import percent
from services.console.upstream import segment

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def when(value: Any) -> str:
    """An RFC 3339 time from an API as `2025-06-30 14:05 UTC` (offset kept when not UTC).

    >>> when("2025-06-30T14:05:09Z"), when("2025-06-30T14:05:09+02:00"), when(None)
    ('2025-06-30 14:05 UTC', '2025-06-30 14:05 +02:00', '–')
    """
    if not isinstance(value, str) or not value:
        return "–"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    offset = moment.strftime("%z")
    zone = "UTC" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return f"{moment:%Y-%m-%d %H:%M} {zone}"


def pretty(value: Any) -> str:
    """A small JSON value (evidence, policy figures) as readable text."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def figure(value: Any) -> str:
    """A figure from an API, rounded for reading (money strings to cents).

    >>> figure(0.123456), figure(3), figure(None), figure("1500.000000")
    ('0.1235', '3', '–', '1500.00')
    """
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, str):
        try:
            return f"{float(value):.2f}" if "." in value else value
        except ValueError:
            return value
    return str(value)


TEMPLATES.env.filters.update(percent=percent, when=when, pretty=pretty, figure=figure,
                              seg=segment)


def render(request: Request, name: str, context: dict[str, Any],
           status_code: int = 200) -> HTMLResponse:
    session = getattr(request.state, "session", None)
    return TEMPLATES.TemplateResponse(
        request, name, {"session": session, **context}, status_code=status_code
    )


def is_htmx(request: Request) -> bool:
    """htmx asks for a fragment (HX-Request), unless it is boosting a whole page."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")

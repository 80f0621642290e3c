"""Playbooks as data: YAML defaults and REST-managed definitions, validated the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.engagement.policy import Candidate
from shared.expr import Expression, ExpressionError, compile_expression

TRIGGERS = {
    "stage.changed": {"to", "from", "rule"},
    "churn.scored": {"probability", "band"},
    "feedback.submitted": {"kind", "score", "category"},
    "profile.updated": set(),
}
CONTACT_VARIABLES = {"tier", "tags", "rfm_segment", "segment", "rm_id", "flags",
                     "open_complaints", "festival"}
CHANNELS = {"email", "sms", "push", "phone", "mail", "rm_task"}


class InvalidPlaybook(ValueError):
    """A playbook that cannot be used; the message names it and the fault."""


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str
    template: str = Field(min_length=1, max_length=64)
    offer: str | None = Field(default=None, max_length=64)

    @field_validator("channel")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CHANNELS:
            raise ValueError(f"channel must be one of {sorted(CHANNELS)}")
        return value


class PlaybookSpec(BaseModel):
    """A playbook as written in YAML or sent to the REST API."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    trigger: str
    when: str = Field(min_length=1, max_length=1000)
    audience: str | None = Field(default=None, max_length=1000)
    action: Action
    purpose: str = Field(pattern="^(marketing|service)$")
    group: str = Field(default="message", max_length=32)
    priority: int = Field(ge=0, le=1000)
    cooldown_days: float = Field(ge=0, le=3650)
    holdout_share: float = Field(default=0.0, ge=0, le=0.5)
    budget_per_month: int | None = Field(default=None, ge=0)
    enabled: bool = True

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        if value not in TRIGGERS:
            raise ValueError(f"trigger must be one of {sorted(TRIGGERS)}")
        return value


@dataclass(frozen=True)
class Playbook:
    spec: PlaybookSpec
    when: Expression
    audience: Expression | None

    @property
    def id(self) -> str:
        return self.spec.id

    def candidate(self) -> Candidate:
        s = self.spec
        return Candidate(s.id, s.action.channel, s.purpose, s.priority, s.cooldown_days,
                         s.holdout_share, s.budget_per_month)

    def fires(self, variables: dict[str, Any]) -> bool:
        if not self.spec.enabled or not self.when.matches(variables):
            return False
        return self.audience is None or self.audience.matches(variables)


def compile_playbook(raw: dict[str, Any]) -> Playbook:
    try:
        spec = PlaybookSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidPlaybook(f"playbook {raw.get('id')!r}: {where}: {first['msg']}") from None
    names = TRIGGERS[spec.trigger] | CONTACT_VARIABLES
    try:
        when = compile_expression(spec.when, allowed_names=set(names))
        audience = (compile_expression(spec.audience, allowed_names=set(names))
                    if spec.audience else None)
    except ExpressionError as exc:
        raise InvalidPlaybook(f"playbook {spec.id!r}: {exc}") from None
    return Playbook(spec, when, audience)


def load_defaults(directory: Path) -> list[Playbook]:
    """The playbooks of every YAML file in `directory` (the festival calendar there is
    checked too, so a bad one stops the service at start, not at the first greeting)."""
    load_festivals(directory)
    playbooks: list[Playbook] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.yaml")):
        document = yaml.safe_load(path.read_text()) or {}
        for raw in document.get("playbooks", []):
            try:
                playbook = compile_playbook(raw)
            except InvalidPlaybook as exc:
                raise InvalidPlaybook(f"{path.name}: {exc}") from None
            if playbook.id in seen:
                raise InvalidPlaybook(f"{path.name}: playbook {playbook.id!r} defined twice")
            seen.add(playbook.id)
            playbooks.append(playbook)
    return playbooks


# Festival greetings (节日问候): the calendar is configuration (`festivals:` in the playbook
# YAML files: name -> list of dates); this one applies when no file defines any.
DEFAULT_FESTIVALS = {
    "spring_festival": [date(2025, 1, 29), date(2026, 2, 17), date(2027, 2, 6)],
    "mid_autumn": [date(2025, 10, 6), date(2026, 9, 25), date(2027, 9, 15)],
    "year_end": [date(y, 12, 31) for y in range(2024, 2031)],
}


def festival_on(day: date, calendar: dict[str, list[date]] | None = None,
                window_days: int = 3) -> str | None:
    """The festival whose greeting window (the days before it, and the day) contains `day`.

    >>> festival_on(date(2026, 2, 15)), festival_on(date(2026, 3, 1))
    ('spring_festival', None)
    """
    for name, days in (calendar or DEFAULT_FESTIVALS).items():
        for d in days:
            if timedelta(0) <= d - day <= timedelta(days=window_days):
                return name
    return None


def load_festivals(directory: Path) -> dict[str, list[date]]:
    """The festival calendar from the `festivals:` sections of the YAML files in `directory`
    (merged; lunar festivals move, so each lists its dates), else the default calendar."""
    calendar: dict[str, list[date]] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError for 2026-13-01
            raise InvalidPlaybook(f"{path.name}: not valid YAML: {exc}") from None
        section = document.get("festivals") or {}
        if not isinstance(section, dict):
            raise InvalidPlaybook(f"{path.name}: festivals must map a name to a list of dates")
        for name, days in section.items():
            if not isinstance(name, str) or not name.isidentifier() or not isinstance(days, list):
                raise InvalidPlaybook(
                    f"{path.name}: festival {name!r}: a name (letters, digits, _) and a list "
                    "of dates (YYYY-MM-DD)")
            for day in days:
                try:
                    parsed = day if isinstance(day, date) else date.fromisoformat(str(day))
                except ValueError:
                    raise InvalidPlaybook(
                        f"{path.name}: festival {name!r}: {day!r} is not a date (YYYY-MM-DD)"
                    ) from None
                calendar.setdefault(name, []).append(parsed)
    return calendar or DEFAULT_FESTIVALS


@lru_cache(maxsize=8)
def festival_calendar(directory: Path) -> dict[str, list[date]]:
    """The calendar of a playbook directory, read once per process."""
    return load_festivals(directory)

"""The four services, by name: settings class, bootstrap module, migrations folder."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

SERVICE_NAMES = ("profile", "scoring", "lifecycle", "engagement")


def settings_class(name: str) -> Any:
    module = importlib.import_module(f"services.{name}.settings")
    return getattr(module, f"{name.capitalize()}Settings")


def migrations_dir(name: str) -> Path:
    return Path(importlib.import_module(f"services.{name}").__file__).parent / "migrations"  # type: ignore[arg-type]

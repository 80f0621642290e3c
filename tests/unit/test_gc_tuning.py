"""The services' garbage-collector setting (shared.app.tune_gc): once per process."""

from __future__ import annotations

import gc

import pytest

from shared import app as app_module
from shared.settings import ServiceSettings


def test_gc_is_tuned_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    monkeypatch.setattr(app_module, "_gc_tuned", False)
    try:
        assert app_module.tune_gc(0) is False, "0 leaves Python's defaults"
        assert gc.get_threshold() == before
        assert app_module.tune_gc(60_000) is True
        assert gc.get_threshold()[0] == 60_000 and gc.get_freeze_count() > 0
        # A second service started in the same process (tests do) changes nothing more.
        gc.set_threshold(*before)
        assert app_module.tune_gc(60_000) is False and gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


def test_the_default_is_a_higher_gen0_threshold() -> None:
    assert ServiceSettings().gc_threshold == 50_000
    assert ServiceSettings(gc_threshold=0).gc_threshold == 0

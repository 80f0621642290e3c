"""Shared fixtures: every integration and e2e test gets its own topics and schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.platform import Namespace, new_namespace


@pytest.fixture
async def ns() -> AsyncIterator[Namespace]:
    namespace = new_namespace()
    await namespace.setup()
    try:
        yield namespace
    finally:
        await namespace.teardown()

"""One namespace (topics and schemas) per module here: these tests read and write nothing
another test of the module depends on, and migrating four schemas per test costs seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.platform import Namespace, new_namespace


@pytest.fixture(scope="module")
async def module_ns() -> AsyncIterator[Namespace]:
    namespace = new_namespace()
    await namespace.setup()
    try:
        yield namespace
    finally:
        await namespace.teardown()

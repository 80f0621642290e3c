"""`tenure keys rotate` re-wraps data keys and re-encrypts profile's fields while profile runs:
old key ids stay readable until rotation finishes, and afterwards the old keys can go."""

from __future__ import annotations

import os
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.profile.pii import Keyring
from shared import events as ev
from shared.crypto import MasterKeys, SealError, b64url
from shared.keys import KeySettings, KeyStore
from tenure_cli.keys import rotate, status
from tenure_cli.publish import EventPublisher
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

PEOPLE = [(f"C-ROT-{i}", f"Rotating Person {i}", f"rot{i}@example.test") for i in range(5)]


def master(key_id: str) -> str:
    return f"{key_id}:{b64url(os.urandom(32))}"


async def names(profile: Any) -> dict[str, str | None]:
    headers = {"Authorization": f"Bearer {token('profile:read', 'pii:read')}"}
    out: dict[str, str | None] = {}
    for cid, _, _ in PEOPLE:
        r = await profile.client.get(f"/v1/customers/{cid}", headers=headers)
        out[cid] = r.json()["identity"].get("name") if r.status_code == 200 else None
    return out


async def test_rotation_is_online_and_old_keys_stay_readable_until_it_finishes(
    ns: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, m2 = master("m1"), master("m2")
    k1, k2 = Keyring.generate("k1"), Keyring.generate("k2")
    both_fields = Keyring({"k2": k2.key("k2"), "k1": k1.key("k1")}, active="k2").to_setting()
    settings = ns.platform()
    t0 = f.now() - f.minutes(20)
    expected = {cid: name for cid, name, _ in PEOPLE}

    # Before: data keys under m1, profile's fields under k1.
    monkeypatch.setenv("TENURE_MASTER_KEYS", m1)
    async with EventPublisher(settings) as publisher:
        for cid, name, email in PEOPLE:
            await publisher.send(f.registered(cid, t0, name=name, email=email))
    async with ns.service("profile", pii_keys=k1.to_setting()) as profile:
        await eventually(lambda: _all(profile, expected), timeout=60, what="registrations")

    # Deploy the new keys first, the old ones after them; then rotate while profile runs.
    monkeypatch.setenv("TENURE_MASTER_KEYS", f"{m2},{m1}")
    keys = KeySettings(**settings.model_dump())
    profile_settings = ns.settings("profile", pii_keys=both_fields)
    async with ns.service("profile", pii_keys=both_fields) as profile:
        stages: list[str] = []

        async def during(stage: str, done: int) -> None:
            # Every customer stays readable between batches, old key ids and new mixed.
            assert await names(profile) == expected
            if not stages:
                # Writes keep flowing: an update mid-rotation lands under the new keys.
                async with EventPublisher(settings) as publisher:
                    await publisher.send(ev.CustomerUpdated(
                        event_id=f.new_id(), customer_id=PEOPLE[0][0],
                        occurred_at=t0 + f.minutes(5), source="crm",
                        payload=ev.CustomerDetails(name="Renamed During Rotation")))
                expected[PEOPLE[0][0]] = "Renamed During Rotation"
                await eventually(lambda: _all(profile, expected), timeout=60, what="update")
            stages.append(stage)

        mixed = await status(keys, profile_settings)
        assert mixed["data_keys_by_master_key"] == {"m1": len(PEOPLE)}
        report = await rotate(keys, profile_settings, batch=2, on_batch=during)
        assert stages.count("data_keys") >= 2 and stages.count("field_tokens") >= 2, stages
        assert report.rewrapped == len(PEOPLE)
        assert report.left["data_keys_by_master_key"] == {"m2": len(PEOPLE)}
        assert set(report.left["field_tokens_by_key"]) == {"k2"}
        assert await names(profile) == expected

    # Rotation finished: the old ids can go. Profile reads with the new keys only, opens new
    # sealed events, and the old master key alone opens nothing any more.
    monkeypatch.setenv("TENURE_MASTER_KEYS", m2)
    async with ns.service("profile", pii_keys=k2.to_setting()) as profile:
        assert await names(profile) == expected
        async with EventPublisher(settings) as publisher:
            await publisher.send(ev.CustomerUpdated(
                event_id=f.new_id(), customer_id=PEOPLE[1][0], occurred_at=t0 + f.minutes(6),
                source="crm", payload=ev.CustomerDetails(name="After Rotation")))
        expected[PEOPLE[1][0]] = "After Rotation"
        await eventually(lambda: _all(profile, expected), timeout=60, what="post-rotation update")

    old_only = KeyStore(keys.privacy_schema, MasterKeys.from_setting(m1))
    new_only = KeyStore(keys.privacy_schema, MasterKeys.from_setting(m2))
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.connect() as conn:
            for cid in expected:
                [[kid]] = await ns.sql("privacy", "SELECT kid FROM customer_keys "
                                       "WHERE customer_id = :c", c=cid)
                assert len(await new_only.key_by_kid(conn, kid, cid)) == 32
                with pytest.raises(SealError):
                    await old_only.key_by_kid(conn, kid, cid)
    finally:
        await engine.dispose()


async def _all(profile: Any, expected: dict[str, str]) -> bool:
    return await names(profile) == expected

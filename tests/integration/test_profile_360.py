"""Profile's 360° view on real Kafka and PostgreSQL: personal data, search, erasure, tags."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.profile.settings import ProfileSettings
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

NAME, PHONE, NID, EMAIL = "Ada Lovelace", "+44 7700 900123", "QQ123456C", "ada@example.test"


def _registered(cid: str, at=None, **kw):  # type: ignore[no-untyped-def]
    return f.registered(cid, at, name=NAME, phone=PHONE, national_id=NID, email=EMAIL,
                        birth_date="1990-12-10", rm_id="RM1", **kw)


async def _known(profile, cid: str, count: int = 1) -> dict:  # type: ignore[no-untyped-def]
    async def probe() -> dict | None:
        r = await profile.get(f"/v1/customers/{cid}")
        return r.json() if r.status_code == 200 and r.json()["activity"]["transaction_count"] >= count else None

    return await eventually(probe, what=f"{cid} in profile")


async def test_personal_data_is_encrypted_masked_searchable_and_audited(ns: Namespace) -> None:
    async with ns.service("profile") as profile:
        await ns.publish("tenure.customers.v1", _registered("C-P", f.now() - f.minutes(5)))
        await ns.publish("tenure.transactions.v1", f.transaction("C-P"))
        await _known(profile, "C-P")

        # Nothing personal in plaintext anywhere in profile's schema.
        dump = await ns.sql(
            "profile",
            "SELECT string_agg(t::text, ' ') FROM ("
            " SELECT row_to_json(c)::text AS t FROM customers c UNION ALL"
            " SELECT encode(token, 'escape') FROM customer_pii UNION ALL"
            " SELECT row_to_json(x)::text FROM timeline x UNION ALL"
            " SELECT encode(digest, 'escape') FROM blind_index) all_rows",
        )
        text = dump[0][0]
        for secret in (NAME, "Lovelace", "7700 900123", "447700900123", NID, EMAIL, "1990-12-10"):
            assert secret not in text, secret

        masked = (await profile.get("/v1/customers/C-P")).json()["identity"]
        assert masked["masked"] is True
        assert masked["name"] == "A** L*******" and masked["phone"].endswith("123")
        assert NID not in str(masked) and EMAIL not in str(masked)
        r = await profile.client.get(
            "/v1/customers/C-P",
            headers={"Authorization": f"Bearer {token('profile:read', 'pii:read', subject='rm-7')}",
                     "X-Purpose": "pre-call review"},
        )
        clear = r.json()["identity"]
        assert (clear["name"], clear["national_id"], clear["email"]) == (NAME, NID, EMAIL)

        audit = await ns.sql("profile", "SELECT subject, action, purpose, detail::text "
                             "FROM audit_log WHERE customer_id = 'C-P' ORDER BY id")
        assert ("rm-7", "read_profile", "pre-call review") in [tuple(a[:3]) for a in audit]
        assert any('"pii": true' in a[3] for a in audit)

        # Search by phone in another format, and by national id: through the blind index.
        for query in ("phone=07700-900123", "phone=0044%207700%20900123", f"national_id=qq 123456 c"):
            found = (await profile.get(f"/v1/customers?{query}")).json()["items"]
            assert [c["customer_id"] for c in found] == ["C-P"], query
        assert (await profile.get("/v1/customers?phone=07700900999")).json()["items"] == []

        events = (await profile.get("/v1/customers/C-P/timeline")).json()["events"]
        assert [e["event_type"] for e in events] == ["transaction.posted", "customer.registered"]
        assert events[0]["amount"] == "25.00" and "name" not in events[1]
        counts = (await profile.get("/v1/segments")).json()
        assert sum(counts["value_tier"].values()) == 1 and sum(counts["rfm_segment"].values()) == 1
        view = (await profile.get("/v1/customers/C-P")).json()
        assert view["value"]["rfm_segment"] is not None
        # 1,000 on a current account at 1.5 % plus 0.5 % interchange on 25.00 of card spend
        assert view["value"]["clv_inputs"]["annual_margin"] == 15.12


async def test_rm_sees_only_their_book(ns: Namespace) -> None:
    async with ns.service("profile") as profile:
        await ns.publish("tenure.customers.v1", _registered("C-BOOK"))
        await ns.publish("tenure.transactions.v1", f.transaction("C-BOOK"))
        await _known(profile, "C-BOOK")
        mine = token("profile:read", subject="rm1", rm_id="RM1")
        other = token("profile:read", subject="rm2", rm_id="RM2")
        ok = await profile.client.get("/v1/customers/C-BOOK", headers={"Authorization": f"Bearer {mine}"})
        no = await profile.client.get("/v1/customers/C-BOOK", headers={"Authorization": f"Bearer {other}"})
        assert ok.status_code == 200 and no.status_code == 403


async def test_erasure_removes_the_customer_everywhere_and_survives_replay(ns: Namespace) -> None:
    registration = _registered("C-E")
    txn = f.transaction("C-E")
    async with ns.service("profile") as profile, ns.service("scoring") as scoring:
        await ns.publish("tenure.customers.v1", registration)
        await ns.publish("tenure.transactions.v1", txn)
        await _known(profile, "C-E")
        await eventually(lambda: _status(scoring, "/v1/customers/C-E/churn", 200), what="score")

        r = await profile.client.delete(
            "/v1/customers/C-E",
            headers={"Authorization": f"Bearer {token('profile:erase', subject='dpo')}"},
        )
        assert r.status_code == 202
        assert (await profile.get("/v1/customers/C-E")).status_code == 404
        await eventually(lambda: _status(scoring, "/v1/customers/C-E/churn", 404),
                         what="scoring honours the erasure")
        for table in ("customers", "customer_pii", "blind_index", "timeline", "activity_days"):
            rows = await ns.sql("profile", f"SELECT count(*) FROM {table} WHERE customer_id = 'C-E'")
            assert rows[0][0] == 0, table
        audit = await ns.sql("profile", "SELECT action FROM audit_log WHERE customer_id = 'C-E'")
        assert ("erase",) in [tuple(a) for a in audit]

        # A replay of the old events (new copies) cannot bring the customer back.
        await ns.publish("tenure.customers.v1", _registered("C-E"))
        await ns.publish("tenure.transactions.v1", f.transaction("C-E"))
        await ns.publish("tenure.transactions.v1", f.transaction("C-OTHER"))
        await _known(profile, "C-OTHER")
        assert (await profile.get("/v1/customers/C-E")).status_code == 404
        erased = await ns.sql("profile", "SELECT count(*) FROM erased_customers WHERE customer_id = 'C-E'")
        assert erased[0][0] == 1


async def _status(svc, path: str, status: int) -> bool:  # type: ignore[no-untyped-def]
    return (await svc.get(path)).status_code == status


async def test_tag_rules_reload_and_bad_rules_are_refused(ns: Namespace, tmp_path: Path) -> None:
    rules = tmp_path / "tags"
    shutil.copytree(ProfileSettings().tags_dir, rules)
    admin = {"Authorization": f"Bearer {token('profile:read', 'profile:admin')}"}
    async with ns.service("profile", tags_dir=str(rules)) as profile:
        await ns.publish("tenure.customers.v1", _registered("C-T"))
        await ns.publish("tenure.transactions.v1", f.transaction("C-T"))
        await _known(profile, "C-T")

        (rules / "extra.yaml").write_text(
            "tags:\n  - tag: any_transaction\n    when: frequency_365 >= 1\n"
        )
        r = await profile.client.post("/v1/tags/rules:reload", headers=admin)
        assert r.status_code == 200 and "extra.yaml" in r.json()["files"]
        await ns.publish("tenure.transactions.v1", f.transaction("C-T"))

        async def tagged() -> bool:
            return "any_transaction" in (await profile.get("/v1/customers/C-T")).json()["tags"]

        await eventually(tagged, what="the new tag")

        (rules / "bad.yaml").write_text("tags:\n  - tag: sneaky\n    when: __import__('os')\n")
        r = await profile.client.post("/v1/tags/rules:reload", headers=admin)
        assert r.status_code == 422
        assert "bad.yaml" in r.json()["detail"] and "sneaky" in r.json()["detail"]
        listed = (await profile.get("/v1/tags/rules")).json()["rules"]
        assert "any_transaction" in [x["tag"] for x in listed]
        assert "sneaky" not in [x["tag"] for x in listed]
        (rules / "typo.yaml").write_text("tags:\n  - tag: typo\n    when: frequncy_30 > 1\n")
        (rules / "bad.yaml").unlink()
        r = await profile.client.post("/v1/tags/rules:reload", headers=admin)
        assert r.status_code == 422 and "frequncy_30" in r.json()["detail"]

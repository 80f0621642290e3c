"""A relationship manager sees the customers of their own book, in every service that knows
a customer's RM; a wider scope or a service token sees more; person reads are audited."""

from __future__ import annotations

import contextlib

from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

SCOPES = ("profile:read", "scoring:read", "lifecycle:read", "engagement:read",
          "engagement:write")


def rm(rm_id: str, *extra: str) -> dict[str, str]:
    bearer = token(*SCOPES, *extra, subject=f"u-{rm_id.lower()}", rm_id=rm_id)
    return {"Authorization": f"Bearer {bearer}", "X-Purpose": "quarterly review"}


SERVICE = {"Authorization": f"Bearer {token(*SCOPES, kind='service', subject='crm')}"}


async def test_relationship_managers_see_only_their_own_book(ns: Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        svc = {n: await stack.enter_async_context(ns.service(n))
               for n in ("profile", "scoring", "engagement")}
        lifecycle = await stack.enter_async_context(ns.service("lifecycle", run_consumers=False))
        for cid, rm_id in (("C-A", "RM-A"), ("C-B", "RM-B")):
            await ns.publish("tenure.customers.v1", f.registered(cid, rm_id=rm_id))
            await ns.publish("tenure.transactions.v1", f.transaction(cid))

        async def known_everywhere() -> bool:
            for cid in ("C-A", "C-B"):
                profile = await svc["profile"].client.get(f"/v1/customers/{cid}",
                                                          headers=SERVICE)
                churn = await svc["scoring"].client.get(f"/v1/customers/{cid}/churn",
                                                        headers=SERVICE)
                if profile.status_code != 200 or churn.status_code != 200:
                    return False
            # engagement learns the RM from profile's snapshot: the owner can read
            mine = await svc["engagement"].client.get("/v1/customers/C-A/actions",
                                                      headers=rm("RM-A"))
            return mine.status_code == 200

        await eventually(known_everywhere, timeout=60, what="both customers in every service")

        customer_routes = [
            (svc["profile"], "/v1/customers/{c}"),
            (svc["profile"], "/v1/customers/{c}/timeline"),
            (svc["scoring"], "/v1/customers/{c}/churn"),
            (svc["engagement"], "/v1/customers/{c}/actions"),
            (svc["engagement"], "/v1/customers/{c}/next-best-action"),
        ]
        for service, template in customer_routes:
            own = await service.client.get(template.format(c="C-A"), headers=rm("RM-A"))
            other = await service.client.get(template.format(c="C-B"), headers=rm("RM-A"))
            wider = await service.client.get(template.format(c="C-B"), headers=rm(
                "RM-A", f"{service.name}:all-books"))
            by_service = await service.client.get(template.format(c="C-B"), headers=SERVICE)
            assert own.status_code == 200, (template, own.text)
            assert other.status_code == 403, (template, other.text)
            assert other.headers["content-type"] == "application/problem+json"
            assert "Test Person" not in other.text and "C-B" not in other.json()["detail"]
            assert wider.status_code == 200 and by_service.status_code == 200, template

        # A real customer's view at an absurd event time is refused, not a 500 (the date
        # arithmetic of the windows overflowed at year 9999).
        for as_of in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"):
            absurd = await svc["profile"].client.get("/v1/customers/C-A",
                                                     params={"as_of": as_of}, headers=SERVICE)
            assert absurd.status_code == 422, absurd.text

        # Erasure by a book-limited token: only a customer of its own book.
        eraser = rm("RM-A", "profile:erase")
        refused = await svc["profile"].client.delete("/v1/customers/C-B", headers=eraser)
        assert refused.status_code == 403
        assert (await svc["profile"].client.get("/v1/customers/C-B",
                                                headers=SERVICE)).status_code == 200

        # Lists keep to the book.
        listed = await svc["profile"].client.get("/v1/customers", headers=rm("RM-A"))
        assert [c["customer_id"] for c in listed.json()["items"]] == ["C-A"]
        everyone = await svc["profile"].client.get("/v1/customers", headers=SERVICE)
        assert {c["customer_id"] for c in everyone.json()["items"]} == {"C-A", "C-B"}
        report = await svc["scoring"].client.get(
            "/v1/churn/report", params={"as_of": "2100-01-01T00:00:00Z"}, headers=rm("RM-A"))
        assert [i["customer_id"] for i in report.json()["items"]] == ["C-A"]

        # Lifecycle cannot tell a customer's RM: a book-limited token gets no customer rows.
        for path in ("/v1/customers/C-A/stage", "/v1/stages/customers", "/v1/stages/history"):
            limited = await lifecycle.client.get(path, headers=rm("RM-A"))
            assert limited.status_code == 403 and "all-books" in limited.json()["detail"]
        counts = await lifecycle.client.get("/v1/stages", headers=rm("RM-A"))
        assert counts.status_code == 200
        opened = await lifecycle.client.get("/v1/customers/C-A/stage",
                                            headers=rm("RM-A", "lifecycle:all-books"))
        assert opened.status_code in (200, 404)

        # Who, what and why of every person's read; service reads are not people's.
        audit = await ns.sql("profile", "SELECT subject, kind, action, customer_id, purpose "
                             "FROM audit_log ORDER BY id")
        rows = {tuple(a) for a in audit}
        assert ("u-rm-a", "person", "read_profile", "C-A", "quarterly review") in rows
        assert ("u-rm-a", "person", "read_timeline", "C-A", "quarterly review") in rows
        assert ("u-rm-a", "person", "list_customers", None, "quarterly review") in rows
        assert not any(a[0] == "crm" for a in audit)
        # A refused read is not recorded as a read: the one timeline read of C-B is the
        # all-books one.
        assert [a for a in audit if a[3] == "C-B" and a[2] == "read_timeline"] == [
            ("u-rm-a", "person", "read_timeline", "C-B", "quarterly review")]

"""The console in a real browser (Debian's headless Chromium through Playwright) against the
running platform: a customer's events go through Kafka into the four services, a person signs
in with a token, finds the customer by phone, opens them, and sees the score and the stage the
services hold. The page is saved as a screenshot under test-artifacts/console/."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from services.console.domain import percent
from tenure_cli.procs import ROOT
from tests.support import factories as f
from tests.support.console_harness import CHROMIUM, CHROMIUM_ARGS, running_platform
from tests.support.platform import Namespace, eventually, token

ARTIFACTS = ROOT / "test-artifacts" / "console"
READ_ALL = ("profile:read", "scoring:read", "lifecycle:read", "engagement:read")


@pytest.fixture
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: ./dev test installs Debian's chromium")
    return CHROMIUM


async def settled(urls: dict[str, str], customer: str) -> dict[str, Any]:
    """The customer's score and stage once every service holds them and they stopped moving
    (two reads half a second apart agree), so the page can be checked against them."""
    headers = {"Authorization": f"Bearer {token(*READ_ALL)}"}
    last: dict[str, Any] = {}

    async def read(client: httpx.AsyncClient) -> dict[str, Any] | None:
        nonlocal last
        p = await client.get(f"{urls['profile']}/v1/customers/{customer}", headers=headers)
        s = await client.get(f"{urls['scoring']}/v1/customers/{customer}/churn",
                             headers=headers)
        l_ = await client.get(f"{urls['lifecycle']}/v1/customers/{customer}/stage",
                              headers=headers)
        if not (p.status_code == s.status_code == l_.status_code == 200):
            return None
        view = p.json()
        if view["activity"]["transaction_count"] != 2 or view["churn"]["probability"] is None:
            return None
        now = {"probability": s.json()["probability"], "band": s.json()["band"],
               "reasons": [r["text"] for r in s.json()["reasons"]],
               "stage": l_.json()["stage"], "model": s.json()["model"]}
        stable, last = now == last, now
        return now if stable else None

    async with httpx.AsyncClient(timeout=10) as client:
        return await eventually(lambda: read(client), timeout=60, interval=0.5,
                                what="score and stage of the customer")


async def test_sign_in_find_a_customer_and_see_score_and_stage(
    ns: Namespace, chromium: str,
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8].upper()}"
    phone = f"+44 7700 9{uuid.uuid4().int % 100000:05d}"
    async with running_platform(ns) as platform:
        t0 = f.now() - f.minutes(30)
        await ns.publish("tenure.customers.v1",
                         f.registered(customer, t0, phone=phone, name="Grace Example"))
        await ns.publish("tenure.transactions.v1",
                         f.transaction(customer, t0 + f.minutes(5), balance_after="2500.00"))
        # Later events on both topics the lifecycle reads move the partition's event clock
        # past the first product's time, so the stage does not wait on the clock.
        late = f.now() - f.minutes(1)
        await ns.publish("tenure.customers.v1",
                         f.consent(customer, "email", "marketing", True, late))
        await ns.publish("tenure.transactions.v1",
                         f.transaction(customer, late, balance_after="2475.00"))
        async with async_playwright() as playwright:
            # The browser starts while the services work through the events.
            truth, browser = await asyncio.gather(
                settled(platform.urls, customer),
                playwright.chromium.launch(executable_path=chromium, headless=True,
                                           args=CHROMIUM_ARGS))
            try:
                page = await browser.new_page(viewport={"width": 1366, "height": 900})
                # A script blocked by the Content-Security-Policy, or htmx failing, shows here.
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{platform.console}/customers")
                await expect(page).to_have_url(f"{platform.console}/login?next=%2Fcustomers"
                                               "&reason=missing")
                await page.fill("#token", token(*READ_ALL, subject="rm-grace"))
                await page.click("button[type=submit]")
                await expect(page).to_have_url(f"{platform.console}/customers")
                await expect(page.locator("header .who")).to_contain_text("rm-grace")

                # Search by phone, written another way: the blind index finds the customer.
                # htmx (served by the console) swaps the results into the page; the number
                # is posted, so it never shows in the URL.
                assert await page.evaluate("typeof window.htmx") == "object"
                await page.fill("input[name=q]", phone.replace(" ", ""))
                await page.click("form.search button")
                row = page.locator("#results #search-results a", has_text=customer)
                await expect(row).to_be_visible()
                await expect(page).to_have_url(f"{platform.console}/customers")
                await row.click()
                await expect(page).to_have_url(f"{platform.console}/customers/{customer}")

                stage_label = truth["stage"].replace("_", " ")
                await expect(page.locator("#stage-now")).to_have_text(stage_label)
                await expect(page.locator("#churn-score")).to_contain_text(
                    percent(truth["probability"]))
                await expect(page.locator("#churn-score")).to_contain_text(truth["band"])
                for reason in truth["reasons"]:
                    await expect(page.locator("#churn-reasons")).to_contain_text(reason)
                await expect(page.locator("#identity")).to_contain_text("masked")
                content = await page.content()
                assert "Grace Example" not in content and phone not in content
                await expect(page.locator("#stage-history")).to_contain_text("prospect")

                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / "customer-360.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                print(f"console screenshot: {shot}")  # noqa: T201 - where the artifact is

                # The funnel counts the customer in the stage the page showed.
                await page.click("nav >> text=Funnel")
                cells = page.locator(f"#funnel tr[data-stage={truth['stage']}] td.num")
                await expect(cells.first).to_have_text("1")
                # The RM worklist filtered (by htmx) on that stage lists them.
                await page.click("nav >> text=Worklists")
                await page.select_option("select[name=stage]", truth["stage"])
                await expect(page).to_have_url(re.compile(rf"stage={truth['stage']}"))
                await expect(page.locator("#worklist-table")).to_contain_text(customer)
                # The model card shows the model that scored them.
                await page.click("nav >> text=Model")
                await expect(page.locator("#model-summary")).to_contain_text(truth["model"])
                assert errors == []
            finally:
                await browser.close()
    assert Path(shot).exists()

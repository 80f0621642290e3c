"""The pages people use: customer search and the 360° view, RM worklists, the lifecycle funnel
and the model card. Each page asks the services with the person's own token and shows what
each service refused or failed to answer, next to what the others did answer."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.console.domain import InvalidInput, day_bound, funnel_rows, plan_search
from services.console.session import SignedIn
from services.console.templating import is_htmx, render
from services.console.upstream import Problem, Reply, Upstreams, segment
from shared.events import Stage

router = APIRouter()
PURPOSE = "tenure console: customer 360 view"
TIERS = ("high", "mid", "low")
RISKS = (("", "any risk"), ("0.3", "≥ 30%"), ("0.5", "≥ 50%"), ("0.7", "≥ 70%"))
Text = Annotated[str | None, Query(max_length=200)]


def _up(request: Request) -> Upstreams:
    return request.app.state.runtime.upstreams  # type: ignore[no-any-return]


def _status(*replies: Reply) -> int:
    """A page whose main reply failed answers with that failure's status."""
    for reply in replies:
        if reply.problem is not None:
            return reply.problem.status
    return 200


@router.get("/", include_in_schema=False)
async def home(session: SignedIn) -> Response:
    return RedirectResponse("/customers", status_code=303)


@router.get("/customers", summary="Find a customer by id or phone")
async def search_page(request: Request, session: SignedIn) -> Response:
    return render(request, "search.html", {"q": "", "by": "auto", "result": None})


@router.post("/customers/search", summary="Search: an id opens the customer, a phone lists")
async def search(
    request: Request, session: SignedIn,
    q: Annotated[str, Form(max_length=200)] = "",
    by: Annotated[str, Form(max_length=10)] = "auto",
) -> Response:
    """A form post, not a query string: a phone number stays out of URLs, browser history and
    proxy logs."""
    result: dict[str, Any] = {"q": q, "items": [], "problem": None, "kind": None}
    try:
        plan = plan_search(q, by)
    except InvalidInput as exc:
        result["problem"] = Problem("console", 422, str(exc))
    else:
        result["kind"] = plan.kind
        if plan.kind == "id":
            target = f"/customers/{segment(plan.value)}"
            if is_htmx(request):
                return Response(status_code=200, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        reply = await _up(request).get("profile", "/v1/customers", session.token,
                                       params={"phone": plan.value, "limit": 20})
        result["problem"] = reply.problem
        result["items"] = (reply.data or {}).get("items", []) if reply.ok else []
    status = result["problem"].status if result["problem"] else 200
    name = "_search_results.html" if is_htmx(request) else "search.html"
    return render(request, name, {"q": q, "by": by, "result": result}, status_code=status)


@router.get("/customers/{customer_id}", summary="The customer's 360° view")
async def customer(
    request: Request, session: SignedIn,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    up, token, cid = _up(request), session.token, segment(customer_id)
    # Profile first: when it refuses (not in this RM's book, unknown, erased), the page shows
    # nothing the other services hold about the customer either.
    profile = await up.get("profile", f"/v1/customers/{cid}", token,
                           headers={"X-Purpose": PURPOSE})
    if not profile.ok:
        return render(request, "customer.html", {"customer_id": customer_id,
                                                 "profile": profile},
                      status_code=_status(profile))
    timeline, stage, churn, actions, nba = await asyncio.gather(
        up.get("profile", f"/v1/customers/{cid}/timeline", token, params={"limit": 20}),
        up.get("lifecycle", f"/v1/customers/{cid}/stage", token),
        up.get("scoring", f"/v1/customers/{cid}/churn", token),
        up.get("engagement", f"/v1/customers/{cid}/actions", token),
        up.get("engagement", f"/v1/customers/{cid}/next-best-action", token),
    )
    return render(request, "customer.html", {
        "customer_id": customer_id, "profile": profile, "timeline": timeline,
        "stage": stage, "churn": churn, "actions": actions, "nba": nba,
    })


@router.get("/worklists", summary="RM worklists: customers by stage, tier and risk")
async def worklists(
    request: Request, session: SignedIn,
    stage: Text = None, tier: Text = None, segment_: Annotated[
        str | None, Query(alias="segment", max_length=40)] = None,
    tag: Text = None, min_churn: Text = None, cursor: Text = None,
) -> Response:
    up = _up(request)
    filters = {"stage": stage, "tier": tier, "segment": segment_, "tag": tag,
               "min_churn": min_churn}
    customers_call = up.get("profile", "/v1/customers", session.token,
                            params={**filters, "cursor": cursor, "limit": 50})
    if is_htmx(request) and request.headers.get("HX-Target") == "worklist":
        customers = await customers_call
        return render(request, "_worklist_table.html",
                      {"customers": customers, "next_href": _next_page(filters, customers)},
                      status_code=_status(customers))
    customers, tasks = await asyncio.gather(
        customers_call, up.get("engagement", "/v1/rm-tasks", session.token,
                               params={"status": "open", "limit": 50}))
    return render(request, "worklists.html", {
        "customers": customers, "tasks": tasks, "filters": filters,
        "next_href": _next_page(filters, customers),
        "stages": [s.value for s in Stage], "tiers": TIERS, "risks": RISKS,
    }, status_code=_status(customers))


def _next_page(filters: dict[str, str | None], customers: Reply) -> str | None:
    cursor = (customers.data or {}).get("next_cursor") if customers.ok else None
    if not cursor:
        return None
    return "/worklists?" + urlencode({k: v for k, v in {**filters, "cursor": cursor}.items()
                                      if v})


@router.get("/funnel", summary="The lifecycle funnel: customers per stage, flows between them")
async def funnel(
    request: Request, session: SignedIn, since: Text = None, until: Text = None,
) -> Response:
    up = _up(request)
    try:
        period = {"since": day_bound(since, "since"), "until": day_bound(until, "until")}
    except InvalidInput as exc:
        problem = Problem("console", 422, str(exc))
        return render(request, "funnel.html", {
            "counts": Reply("console", problem=problem), "flows": None, "rows": [],
            "since": since, "until": until}, status_code=422)
    counts, flows = await asyncio.gather(
        up.get("lifecycle", "/v1/stages", session.token),
        up.get("lifecycle", "/v1/stages/transitions", session.token, params=period),
    )
    rows = []
    if counts.ok:
        flow = flows.data or {}
        rows = funnel_rows(counts.data.get("stages", {}), flow.get("entered"), flow.get("left"))
    return render(request, "funnel.html", {
        "counts": counts, "flows": flows, "rows": rows, "since": since, "until": until,
    }, status_code=_status(counts, flows))


@router.get("/model", summary="The churn model card and its metrics")
async def model(request: Request, session: SignedIn) -> Response:
    card = await _up(request).get("scoring", "/v1/model", session.token)
    return render(request, "model.html", {"card": card}, status_code=_status(card))

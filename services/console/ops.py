"""The dead-letter queue for operators: what was refused and why, and re-publishing a message
to its original topic once its cause is fixed. The console enforces these scopes itself (no
service owns the DLQ): `ops:read` to look, `ops:admin` to re-publish (and look), and
`pii:read` to see a message's bytes, which may hold personal data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.console.dlq import BrokerUnavailable, DeadLetters
from services.console.domain import InvalidInput, by_message, dead_letter, republish_target
from services.console.session import Session, SignedIn
from services.console.templating import is_htmx, render

router = APIRouter(prefix="/ops")
READ, ADMIN = "ops:read", "ops:admin"


def _dlq(request: Request) -> DeadLetters:
    return request.app.state.runtime.dead_letters  # type: ignore[no-any-return]


def _forbidden(request: Request, session: Session, scope: str, fragment: bool) -> Response:
    message = (f"This needs the scope {scope!r}; your token holds "
               f"{', '.join(sorted(session.principal.scopes)) or 'no scopes'}.")
    name = "dlq.html" if not fragment else _result_page(request)
    return render(request, name, {"forbidden": message, "letters": [], "problem": None,
                                  "result": None, "service": None}, status_code=403)


def _result_page(request: Request) -> str:
    """htmx swaps the outcome into the row; a plain form post gets a whole page."""
    return "_dlq_result.html" if is_htmx(request) else "dlq_result.html"


@router.get("/dlq", summary="The latest dead letters, newest first")
async def dlq(
    request: Request, session: SignedIn,
    service: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    if not (session.has(READ) or session.has(ADMIN)):  # who may re-publish may look
        return _forbidden(request, session, READ, fragment=False)
    dead_letters = _dlq(request)
    try:
        records = await dead_letters.latest(request.app.state.settings.dlq_page_size)
    except BrokerUnavailable as exc:
        return render(request, "dlq.html", {"letters": [], "problem": str(exc),
                                            "forbidden": None, "service": service},
                      status_code=502)
    show = session.has("pii:read")
    letters = [dead_letter(partition=r.partition, offset=r.offset, key=r.key, value=r.value,
                           headers=r.headers, show_payload=show) for r in records]
    if service:
        letters = [d for d in letters if d.service == service]
    return render(request, "dlq.html", {
        "refused": by_message(letters), "letters": letters, "problem": None, "forbidden": None,
        "service": service,
        "topic": dead_letters.topic, "can_republish": session.has(ADMIN), "shows_payload": show,
    })


@router.post("/dlq/{partition}/{offset}/republish",
             summary="Re-publish a dead letter to its original topic")
async def republish(
    request: Request, session: SignedIn,
    partition: Annotated[int, Path(ge=0, le=10_000)],
    offset: Annotated[int, Path(ge=0)],
) -> Response:
    if not session.has(ADMIN):
        return _forbidden(request, session, ADMIN, fragment=True)
    dead_letters = _dlq(request)
    where = f"{dead_letters.topic}[{partition}]@{offset}"
    try:
        record = await dead_letters.one(partition, offset)
        if record is None:
            return render(request, _result_page(request), {
                "problem": f"there is no dead letter at {where} (any more)", "result": None,
                "forbidden": None}, status_code=404)
        letter = dead_letter(partition=partition, offset=offset, key=record.key,
                             value=record.value, headers=record.headers, show_payload=False)
        topic = republish_target(letter.original_topic, dead_letters.allowed_topics(),
                                 dead_letters.allowed_prefixes())
        sent = await dead_letters.republish(record, topic, by=session.principal.subject)
    except InvalidInput as exc:
        return render(request, _result_page(request), {
            "problem": f"{where} was not re-published: {exc}", "result": None,
            "forbidden": None}, status_code=409)
    except BrokerUnavailable as exc:
        return render(request, _result_page(request), {
            "problem": str(exc), "result": None, "forbidden": None}, status_code=502)
    request.app.state.runtime.metrics.republished.inc()
    return render(request, _result_page(request), {
        "problem": None, "forbidden": None,
        "result": f"re-published to {sent.topic}[{sent.partition}]@{sent.offset}",
    })

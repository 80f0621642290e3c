"""Signing in: a person pastes their bearer token once; the console keeps it in an HttpOnly,
SameSite=Strict cookie and forwards it to the services, which enforce their own scopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.domain import safe_next
from services.console.templating import render
from shared.auth import Principal, TokenVerifier

COOKIE = "tenure_console_token"
MAX_TOKEN_CHARS = 8192
REASONS = {
    "missing": "Sign in with a token to use the console.",
    "refused": "Your token is no longer accepted (expired or invalid): sign in again.",
    "signed-out": "You are signed out.",
}

router = APIRouter()


@dataclass(frozen=True)
class Session:
    principal: Principal
    token: str

    def has(self, scope: str) -> bool:
        return self.principal.has(scope)


class SignInRequired(Exception):
    """No usable token: the app's handler sends the person to the sign-in page."""

    def __init__(self, reason: str):
        self.reason = reason


async def verify(request: Request, token: str) -> Principal:
    """The principal a token speaks for, or a 401 HTTPException saying why not; checked the
    way the services check it (dev HS256 key, or the identity provider's keys in OIDC mode)."""
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


async def current_session(request: Request) -> Session:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired("missing")
    try:
        principal = await verify(request, token)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise  # e.g. 503: the identity provider's keys are unavailable; the page says so
        raise SignInRequired("refused") from None
    session = Session(principal, token)
    request.state.session = session  # the page's header shows who is signed in
    return session


SignedIn = Annotated[Session, Depends(current_session)]


def sign_in_redirect(request: Request, reason: str) -> Response:
    """To the sign-in page, then back here; htmx requests get HX-Redirect (a whole page)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    # Back to the page after signing in; a form post (search, re-publish) is not repeated.
    back = safe_next(here) if request.method == "GET" else "/customers"
    target = "/login?" + urlencode({"next": back, "reason": reason})
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.get("/login", summary="Sign-in page")
async def login_page(request: Request, next: str | None = None,
                     reason: str | None = None) -> Response:
    return render(request, "login.html", {
        "next": safe_next(next), "notice": REASONS.get(reason or ""), "error": None,
    })


@router.post("/login", summary="Sign in with a bearer token")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=MAX_TOKEN_CHARS)],
    next: Annotated[str, Form(max_length=2000)] = "/customers",
) -> Response:
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    target = safe_next(next)
    try:
        principal = await verify(request, token) if token else None
    except HTTPException as exc:
        return render(request, "login.html", {
            "next": target, "notice": None,
            "error": f"The token was refused: {exc.detail}.",
        }, status_code=exc.status_code)
    if principal is None:
        return render(request, "login.html", {
            "next": target, "notice": None, "error": "Paste a token first.",
        }, status_code=422)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", path="/",
        secure=request.app.state.settings.cookie_secure,
    )
    return response


@router.post("/logout", summary="Sign out (forget the token)")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/login?reason=signed-out", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.app.state.settings.cookie_secure)
    return response

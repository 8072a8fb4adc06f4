"""The console's pages (Starlette + Jinja2, server-rendered, no script): the desk over HTTP.

Every page that shows a recording, a request, the trail or a report asks the same
`AccessDesk` the CLI asks, as the person the session logged in as (A12), so the policy and
the audit trail apply exactly as on the command line: nothing here reads the catalog or a
file itself. Forms carry a per-session CSRF token; the login form a double-submit token.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from recorder.access.desk import AccessDesk, ReadCopy
from recorder.access.workflow import AccessRefused, Caller
from recorder.cli.reports import draw_chart
from recorder.console.passwords import AddressLimiter, authenticate
from recorder.console.sessions import Session, SessionStore, same_token
from recorder.console.waveform import waveform_png
from recorder.policy import Policy
from storage.accounts import Accounts

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "recorder_session"
LOGIN_COOKIE = "recorder_login"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    """What the pages need: the desk, the live policy, the accounts, and where to run them."""

    desk: AccessDesk
    policy: Callable[[], Policy]
    accounts: Accounts
    run: Callable[[Callable[[], Any]], Awaitable[Any]]
    sessions: SessionStore
    secure: bool = False
    limiter: AddressLimiter = field(default_factory=AddressLimiter)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def call(self, fn: Callable[[], T]) -> T:
        result: T = await self.run(fn)
        return result


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def _when(text: object, zone: tzinfo) -> str:
    """An ISO instant as the policy's wall clock, to the minute."""
    if not text:
        return "-"
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")


ENV = _environment()


def _page(
    request: Request,
    name: str,
    status: int = 200,
    session: Session | None = None,
    **context: Any,
) -> HTMLResponse:
    console: Console = request.app.state.console
    me = None
    if session is not None:
        me = console.policy().people.get(session.person)
    role = None if me is None else console.policy().roles.get(me.role)
    flashes = []
    if session is not None:
        flashes, session.flashes = session.flashes, []
    html = ENV.get_template(name).render(
        request=request,
        zone=console.policy().timezone,
        session=session,
        me=me,
        role=role,
        flashes=flashes,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _session(request: Request) -> Session | None:
    console: Console = request.app.state.console
    return console.sessions.get(request.cookies.get(SESSION_COOKIE), console.clock())


def _caller(session: Session) -> Caller:
    return Caller(uid=None, account=None, console_person=session.person)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303, headers=HEADERS)


def _refused(request: Request, session: Session, refusal: AccessRefused) -> HTMLResponse:
    return _page(
        request,
        "refused.html",
        403,
        session,
        rule=refusal.rule,
        message=refusal.message,
    )


async def _form(request: Request, session: Session) -> FormData | None:
    """The form's fields, or None when its CSRF token is missing or wrong."""
    form = await request.form()
    if not same_token(session.csrf, form.get("csrf")):
        return None
    return form


def _csrf_failure() -> Response:
    return Response("CSRF token missing or wrong", status_code=403, headers=HEADERS)


# --- login ---


async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", login_csrf=token, error=None)
    _set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    console: Console = request.app.state.console
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        secure=console.secure,
        samesite="strict",
        path="/",
    )


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await request.form()
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or not same_token(token, form.get("csrf")):
        return _csrf_failure()
    address = request.client.host if request.client else "-"
    person = str(form.get("person") or "").strip()
    password = str(form.get("password") or "")
    now = console.clock()
    if not console.limiter.hit(address, now):
        await console.call(
            lambda: console.desk.trace_login(console.policy(), person, console.wall(), "throttled")
        )
        throttled = _page(request, "login.html", 429, login_csrf=token, error="Too many attempts.")
        throttled.headers["Retry-After"] = "60"
        return throttled
    policy = console.policy()
    result = await console.call(
        lambda: authenticate(
            console.accounts, policy.password_rule, person, password, console.wall()
        )
    )
    await console.call(
        lambda: console.desk.trace_login(
            policy, person, console.wall(), "ok" if result.ok else "refused", result.reason
        )
    )
    if not result.ok:
        # One message whatever failed: it must not tell which accounts exist.
        error = "Unknown account or wrong password, or the account is locked."
        return _page(request, "login.html", 401, login_csrf=token, error=error)
    session = console.sessions.open(person, now)
    response = RedirectResponse("/", status_code=303, headers=HEADERS)
    _set_cookie(request, response, SESSION_COOKIE, session.token)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


DeskCall = Callable[[AccessDesk, Policy, Caller, datetime], T]
Page = Callable[[Request, Session], Awaitable[Response]]


async def _ask(request: Request, session: Session, call: DeskCall[T]) -> T:
    """One desk call as the session's person, on the desk's thread; refusals propagate."""
    console: Console = request.app.state.console
    policy, now = console.policy(), console.wall()
    return await console.call(lambda: call(console.desk, policy, _caller(session), now))


def logged_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page for a live session (else the login page), a refusal shown with its rule."""

    async def handle(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return _to_login()
        try:
            return await page(request, session)
        except AccessRefused as refusal:
            return _refused(request, session, refusal)

    return handle


def with_form(page: Callable[[Request, Session, FormData], Awaitable[Response]]) -> Page:
    """A POST whose CSRF token matches the session's, else 403 and nothing done."""

    async def handle(request: Request, session: Session) -> Response:
        form = await _form(request, session)
        if form is None:
            return _csrf_failure()
        return await page(request, session, form)

    return handle


@logged_in
@with_form
async def logout(request: Request, session: Session, _form: FormData) -> Response:
    console: Console = request.app.state.console
    console.sessions.close(session.token)
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@logged_in
async def home(request: Request, session: Session) -> Response:
    me = await _ask(request, session, lambda desk, p, c, now: desk.whoami(p, c, now))
    return _page(request, "home.html", session=session, whoami=me)


@logged_in
async def search(request: Request, session: Session) -> Response:
    q = request.query_params
    keys = ("from", "to", "extension", "agent", "number")
    filters = {key: (q.get(key) or None) for key in keys}
    rows: list[dict[str, Any]] | None = None
    if q.get("go"):
        rows = await _ask(
            request,
            session,
            lambda desk, p, c, now: desk.search(
                p,
                c,
                now,
                since=filters["from"],
                until=filters["to"],
                extension=filters["extension"],
                agent=filters["agent"],
                number=filters["number"],
            ),
        )
    return _page(request, "search.html", session=session, filters=filters, rows=rows)


@logged_in
async def requests_page(request: Request, session: Session) -> Response:
    rows = await _ask(request, session, lambda desk, p, c, now: desk.requests(p, c, now))
    listed = [info.to_json() for info in rows]
    return _page(request, "requests.html", session=session, requests=listed)


@logged_in
@with_form
async def file_request(request: Request, session: Session, form: FormData) -> Response:
    picked = [value for value in form.getlist("pick") if isinstance(value, str)]
    ids = sorted({int(value) for value in picked if value.isdigit()})
    purpose, reason = str(form.get("purpose") or ""), str(form.get("reason") or "")
    info = await _ask(
        request,
        session,
        lambda desk, p, c, now: desk.request(
            p, c, now, purpose=purpose, reason=reason, selector={"recordings": ids}
        ),
    )
    session.flashes.append(f"Request {info.public_id} registered ({info.state.value}).")
    return RedirectResponse("/requests", status_code=303, headers=HEADERS)


@logged_in
@with_form
async def verdict(request: Request, session: Session, form: FormData) -> Response:
    request_id = request.path_params["request_id"]
    decision = "approved" if request.path_params["verdict"] == "approve" else "denied"
    reason = str(form.get("reason") or "") or None
    info = await _ask(
        request,
        session,
        lambda desk, p, c, now: desk.verdict(
            p, c, now, request_id=request_id, verdict=decision, reason=reason
        ),
    )
    session.flashes.append(f"Request {info.public_id}: {decision} ({info.state.value}).")
    return RedirectResponse("/requests", status_code=303, headers=HEADERS)


async def _read(request: Request, session: Session, action: str) -> ReadCopy:
    request_id = request.path_params["request_id"]
    recording = int(request.path_params["recording"])
    return await _ask(
        request,
        session,
        lambda desk, p, c, now: desk.read(
            p, c, now, request_id=request_id, recording_id=recording, action=action
        ),
    )


@logged_in
async def listen_page(request: Request, session: Session) -> Response:
    copy = await _read(request, session, "recording.waveform")
    loop = asyncio.get_running_loop()
    picture = base64.b64encode(await loop.run_in_executor(None, waveform_png, copy.data))
    request_id = request.path_params["request_id"]
    return _page(
        request,
        "listen.html",
        session=session,
        recording=copy.recording,
        request_id=request_id,
        waveform=picture.decode(),
        audio_url=f"/audio/{request_id}/{copy.recording.id}.wav",
    )


async def audio(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return Response("not logged in", status_code=401, headers=HEADERS)
    try:
        copy = await _read(request, session, "recording.listen")
    except AccessRefused as refusal:
        return Response(f"refused ({refusal.rule})", status_code=403, headers=HEADERS)
    headers = {**HEADERS, "Content-Disposition": "inline"}
    return Response(copy.data, media_type="audio/wav", headers=headers)


@logged_in
async def audit_page(request: Request, session: Session) -> Response:
    entries = await _ask(request, session, lambda desk, p, c, now: desk.audit_entries(p, c, now))
    return _page(request, "audit.html", session=session, entries=list(reversed(entries)))


def _report_params(console: Console, kind: str, request: Request) -> dict[str, Any]:
    q = request.query_params
    if kind == "annual":
        year = q.get("year") or str(console.wall().year)
        return {"year": int(year) if year.isdigit() else 0}
    if kind == "quality":
        today = console.wall().astimezone(console.policy().timezone).date()
        return {
            "from": q.get("from") or today.replace(day=1).isoformat(),
            "to": q.get("to") or today.isoformat(),
            "per_agent": q.get("per_agent") == "1",
        }
    return {}


@logged_in
async def report_page(request: Request, session: Session) -> Response:
    console: Console = request.app.state.console
    kind = request.path_params["kind"]
    params = _report_params(console, kind, request)
    view = await _ask(
        request, session, lambda desk, p, c, now: desk.report(p, c, now, kind=kind, params=params)
    )
    chart = await asyncio.get_running_loop().run_in_executor(None, _chart, view)
    return _page(request, "report.html", session=session, view=view, chart=chart, params=params)


def _chart(view: dict[str, Any]) -> str:
    out = io.BytesIO()
    draw_chart(view, out)
    return base64.b64encode(out.getvalue()).decode()


def build_app(console: Console) -> Starlette:
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", home),
        Route("/search", search),
        Route("/requests", requests_page, methods=["GET"]),
        Route("/requests", file_request, methods=["POST"]),
        Route("/requests/{request_id}/{verdict:str}", verdict, methods=["POST"]),
        Route("/listen/{request_id}/{recording:int}", listen_page),
        Route("/audio/{request_id}/{recording:int}.wav", audio),
        Route("/audit", audit_page),
        Route("/reports/{kind}", report_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    return app

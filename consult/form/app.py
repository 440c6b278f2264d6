"""The response form: ``/r/{token}`` shows the round's questionnaire to the partnership the token stands for.

Plain HTML forms (no JavaScript), rendered from the questionnaire with Jinja2 (autoescaped) in the partnership's
language. What a post does is in :mod:`consult.form.submissions`; the defences are in :mod:`consult.form.security`.
Every unknown, altered or other round's token, like any unknown path, gets the one same 404 page.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from consult.form.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    CsrfTokens,
    FailedLookups,
    csrf_key,
    new_cookie_value,
)
from consult.form.submissions import (
    Participant,
    Previous,
    RoundClosed,
    cells_from_answers,
    cells_from_fields,
    find_participant,
    form_fields,
    previous_answers,
    questionnaire_of,
    shown_answer,
    submit,
)
from consult.questionnaire import ISO3166, Question, Questionnaire, country_name
from consult.settings import TEMPLATES_DIR, Settings
from consult.tokens import hash_token
from db.engine import open_database

FORM_TEMPLATES_DIR = TEMPLATES_DIR / "form"
LANGUAGES = ("en", "fr")
log = logging.getLogger("consult.form")


@lru_cache(maxsize=2)
def _environment(directory: Path) -> Environment:
    # Every template here is HTML: autoescape everything, always (answers are shown back to people).
    return Environment(loader=FileSystemLoader(str(directory)), autoescape=True, undefined=StrictUndefined)


@lru_cache(maxsize=8)
def strings(language: str) -> dict[str, Any]:
    """The page's own words in one language (questions and options come from the questionnaire)."""
    chosen = language if language in LANGUAGES else "en"
    path = FORM_TEMPLATES_DIR / "strings" / f"{chosen}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _plain(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def help_text(question: Question, words: Mapping[str, Any]) -> str:
    """What the answer may be, from the question's min/max/options/max_length."""
    hints = words["help"]
    low, high = _plain(question.min), _plain(question.max)
    if question.kind in ("integer", "number", "scale"):
        kind = "whole" if question.kind in ("integer", "scale") else "number"
        if low and high:
            return hints[f"{kind}_between"].format(min=low, max=high)
        if low:
            return hints[f"{kind}_at_least"].format(min=low)
        if high:
            return hints[f"{kind}_at_most"].format(max=high)
        return hints[kind]
    if question.kind == "multi_select":
        return hints["multi_select"]
    if question.kind == "single_select":
        return hints["single_select"]
    if question.kind == "text" and question.max_length:
        return hints["text_max"].format(max=question.max_length)
    return ""


@lru_cache(maxsize=1)
def _countries() -> tuple[tuple[str, str], ...]:
    import pycountry

    return tuple(sorted(((c.alpha_2, country_name(c.alpha_2)) for c in pycountry.countries), key=lambda p: p[1]))


def options_of(question: Question) -> list[tuple[str, str]]:
    if question.kind == "scale":
        labels = getattr(question, "labels", None) or {}
        low, high = int(question.min or 1), int(question.max or 5)
        return [(str(value), f"{value}" + (f" – {labels[value]}" if value in labels else "")) for value in range(low, high + 1)]
    if question.options == ISO3166:
        return list(_countries())
    return [(option.code, option.label) for option in question.options or []]


def error_message(reason: Mapping[str, Any], question: Question | None, words: Mapping[str, Any]) -> str:
    """The suite's finding, said to the person who typed the answer, in their language."""
    template = words["errors"].get(str(reason.get("rule")))
    if template is None:
        return str(reason.get("message", ""))
    return template.format(
        min=_plain(question.min) if question else "", max=_plain(question.max) if question else "",
        max_length=question.max_length if question else "", value=reason.get("value", ""),
    )


@dataclass
class FieldView:
    question: Question
    help: str
    options: list[tuple[str, str]]
    value: str
    selected: set[str]
    errors: list[str]


def field_views(questionnaire: Questionnaire, cells: Mapping[str, str], errors: Mapping[str, list[Any]],
                words: Mapping[str, Any]) -> list[FieldView]:
    views = []
    for question in form_fields(questionnaire):
        value = cells.get(question.code, "") or ""
        selected = {part for part in value.split(";") if part} if question.kind == "multi_select" else {value}
        if question.kind == "yes_no":
            lowered = value.strip().lower()
            selected = {"yes"} if lowered in ("yes", "true", "1", "oui") else {"no"} if lowered in ("no", "false", "0", "non") else set()
        views.append(FieldView(
            question=question, help=help_text(question, words), options=options_of(question), value=value,
            selected=selected,
            errors=[error_message(reason, question, words) for reason in errors.get(question.code, [])],
        ))
    return views


class FormApp:
    """The state one running form shares across requests: the engine, the CSRF tokens, the failed lookups."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or open_database(settings.resolved_database_url)
        self.csrf = CsrfTokens(csrf_key(settings.resolved_token_secret()))
        self.failed = FailedLookups(settings.form_failed_lookups, settings.form_failed_lookup_window_seconds)
        self.max_body = settings.form_max_body_bytes
        self.env = _environment(FORM_TEMPLATES_DIR)

    # --- pages -------------------------------------------------------------------------------------------

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def not_found(self) -> HTMLResponse:
        # One page for every unknown, altered or other round's token (and any unknown path): no oracle.
        return self.page("not_found.html.j2", 404, en=strings("en"), fr=strings("fr"))

    def refused(self, status: int, key: str) -> HTMLResponse:
        return self.page("refused.html.j2", status, en=strings("en"), fr=strings("fr"), key=key)

    def summary(self, questionnaire: Questionnaire, answers: Mapping[str, Any] | None,
                words: Mapping[str, Any]) -> list[tuple[str, str]]:
        if answers is None:
            return []
        return [(question.label, shown_answer(question, answers.get(question.code), words["words"]))
                for question in form_fields(questionnaire)]

    def form_page(self, participant: Participant, questionnaire: Questionnaire, *, cells: Mapping[str, str],
                  errors: Mapping[str, list[Any]], csrf_value: str, notice: str | None, previous: Previous,
                  status: int = 200, top_error: str | None = None) -> HTMLResponse:
        words = strings(participant.language)
        fields = field_views(questionnaire, cells, errors, words)
        error_list = [(view.question.code, view.question.label, message) for view in fields for message in view.errors]
        return self.page(
            "form.html.j2", status, t=words, lang=words["lang"], participant=participant,
            questionnaire=questionnaire, fields=fields, error_list=error_list, csrf_field=CSRF_FIELD,
            csrf_value=csrf_value, notice=notice, previous=previous, top_error=top_error,
        )

    # --- lookups -------------------------------------------------------------------------------------------

    def lookup(self, client: str, token: str) -> Participant | None:
        with Session(self.engine) as session:
            participant = find_participant(session, token)
        if participant is None:
            self.failed.record(client)
        return participant

    def show(self, participant: Participant, token: str, cookie: str, *, edit: bool, notice: str | None) -> HTMLResponse:
        with Session(self.engine) as session:
            questionnaire = questionnaire_of(session, participant)
            previous = previous_answers(session, participant)
        words = strings(participant.language)
        if not participant.is_open:
            return self.page("closed.html.j2", t=words, lang=words["lang"], participant=participant,
                             questionnaire=questionnaire, previous=previous,
                             summary=self.summary(questionnaire, previous.accepted_answers, words))
        if previous.accepted_answers is not None and previous.draft_cells is None and not edit:
            return self.page("done.html.j2", t=words, lang=words["lang"], participant=participant,
                             questionnaire=questionnaire, previous=previous, notice=notice,
                             summary=self.summary(questionnaire, previous.accepted_answers, words))
        if previous.draft_cells is not None:
            cells: Mapping[str, str] = previous.draft_cells
        elif previous.accepted_answers is not None:
            cells = cells_from_answers(questionnaire, previous.accepted_answers)
        else:
            cells = {}
        return self.form_page(participant, questionnaire, cells=cells, errors={}, notice=notice, previous=previous,
                              csrf_value=self.csrf.issue(hash_token(token), cookie))

    def post(self, participant: Participant, token: str, cookie: str | None, fields: dict[str, list[str]], *,
             secure: bool = False) -> Response:
        with Session(self.engine) as session:
            questionnaire = questionnaire_of(session, participant)
            previous = previous_answers(session, participant)
        words = strings(participant.language)
        token_hash = hash_token(token)
        cells = cells_from_fields(questionnaire, fields)
        fresh_cookie = cookie or new_cookie_value()
        csrf_value = (fields.get(CSRF_FIELD) or [""])[0]
        if not self.csrf.consume(token_hash, cookie, csrf_value):
            # Nothing is stored; the answers come back in a fresh form, to send again on purpose.
            response = self.form_page(participant, questionnaire, cells=cells, errors={}, notice=None,
                                      previous=previous, status=403, top_error=words["csrf_failed"],
                                      csrf_value=self.csrf.issue(token_hash, fresh_cookie))
            return self._with_cookie(response, fresh_cookie, secure=secure)
        if not participant.is_open:
            return self.page("closed.html.j2", 409, t=words, lang=words["lang"], participant=participant,
                             questionnaire=questionnaire, previous=previous,
                             summary=self.summary(questionnaire, previous.accepted_answers, words))
        complete = (fields.get("action") or ["submit"])[0] != "save"
        try:
            outcome = submit(self.engine, participant, questionnaire, cells, complete=complete,
                             timezone=self.settings.timezone)
        except RoundClosed:
            return self.page("closed.html.j2", 409, t=words, lang=words["lang"], participant=participant,
                             questionnaire=questionnaire, previous=previous,
                             summary=self.summary(questionnaire, previous.accepted_answers, words))
        if outcome.errors:
            return self.form_page(participant, questionnaire, cells=cells, errors=outcome.errors, notice=None,
                                  previous=previous, status=422, csrf_value=self.csrf.issue(token_hash, fresh_cookie))
        log.info("form %s stored for partnership %s in round %s", outcome.status, participant.partnership_code,
                 participant.year)
        # Post/redirect/get: reloading the confirmation never posts the answers again.
        return RedirectResponse(f"/r/{urllib.parse.quote(token, safe='')}?{'saved' if not complete else 'sent'}=1",
                                status_code=303)

    @staticmethod
    def _with_cookie(response: Response, cookie: str, *, secure: bool) -> Response:
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="lax", secure=secure, path="/r/",
                            max_age=7 * 24 * 3600)
        return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes whether or not a Content-Length announces it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The form as an ASGI application (``consult form serve`` runs it with uvicorn)."""
    form = FormApp(settings, engine)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    css = (FORM_TEMPLATES_DIR / "form.css").read_bytes()

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # The access log of this app: never the path itself, which carries a response token.
        path = "/r/…" if request.url.path.startswith("/r/") else request.url.path
        log.info("%s %s %s %.0f ms", request.method, path, response.status_code, 1000 * (time.perf_counter() - started))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return form.not_found()
        if error.status_code == 405:
            return form.refused(405, "method")
        return form.refused(error.status_code, "generic")

    @app.get("/static/form.css")
    def stylesheet() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/")
    def home() -> HTMLResponse:
        return form.page("home.html.j2", en=strings("en"), fr=strings("fr"))

    @app.get("/r/{token}")
    async def show(request: Request, token: str, edit: int = 0, saved: int = 0, sent: int = 0) -> Response:
        client = _client(request)
        if form.failed.blocked(client):
            return form.refused(429, "rate_limited")
        participant = await run_in_threadpool(form.lookup, client, token)
        if participant is None:
            return form.not_found()
        cookie = request.cookies.get(CSRF_COOKIE) or new_cookie_value()
        words = strings(participant.language)
        notice = words["saved_notice"] if saved else words["sent_notice"] if sent else None
        response = await run_in_threadpool(form.show, participant, token, cookie, edit=bool(edit), notice=notice)
        return form._with_cookie(response, cookie, secure=request.url.scheme == "https")

    @app.post("/r/{token}")
    async def post(request: Request, token: str) -> Response:
        client = _client(request)
        if form.failed.blocked(client):
            return form.refused(429, "rate_limited")
        try:
            body = await read_body(request, form.max_body)
        except BodyTooLarge:
            return form.refused(413, "too_large")
        participant = await run_in_threadpool(form.lookup, client, token)
        if participant is None:
            return form.not_found()
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
        except (UnicodeDecodeError, ValueError):
            return form.refused(400, "generic")
        return await run_in_threadpool(form.post, participant, token, request.cookies.get(CSRF_COOKIE), fields,
                                      secure=request.url.scheme == "https")

    app.state.form = form
    return app

"""The customers' case tracker: sign-in by mailed link, the case list, the case page, comments and
requests for higher urgency.

- Sessions are a signed cookie (Starlette ``SessionMiddleware``, set up in ``web/app.py``): the
  address, a CSRF token and the chosen language. Every form carries the session's CSRF token,
  compared with ``secrets.compare_digest``; a POST without it is refused (403) and changes nothing.
- Who sees which case is decided by ``web/visibility.py``; every case lookup goes through
  ``store/tracker.py`` with that viewer, so a foreign case and a case that does not exist give the
  same 404.
- Pages are Jinja2 templates under ``templates/web/`` (autoescaped); the words are in ``web/i18n.py``.
  No JavaScript: the full text of a mail is a ``<details>`` element, filters a GET form.
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import datetime
from urllib.parse import urlencode

import structlog
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from mailbridge.app import App
from mailbridge.outbound.links import CASE_PATH, CaseLinkExpired, CaseLinkInvalid
from mailbridge.outbound.templates import plural
from mailbridge.resources import templates_dir
from mailbridge.store import tracker as tq
from mailbridge.store.db import session_scope
from mailbridge.store.tracker import SORTS, Viewer
from mailbridge.views import zone_of
from mailbridge.web import i18n
from mailbridge.web.comments import Comments, TooLarge, Upload
from mailbridge.web.i18n import TEXT
from mailbridge.web.routes import content_disposition, safe_media_type
from mailbridge.web.signin import SignIn, clean_address
from mailbridge.web.visibility import shown_sender, viewer_for

log = structlog.get_logger(__name__)

# A comment's files: at most this many (the mail's size limit applies to all of it).
MAX_FILES = 10
# What a search text may be at most.
MAX_SEARCH = 200


class Tracker:
    """The tracker's parts, built once per web app over the :class:`App`."""

    def __init__(self, app: App):
        self.app = app
        self.signin = SignIn(app)
        self.comments = Comments(app)
        # A case link in a mail we sent signs its recipient in: shown to a colleague, it would sign
        # them in as that recipient, so the page shows a plain link to the case instead.
        base = app.settings.web.base_url or "/"
        self._case_link_re = re.compile(re.escape(base + CASE_PATH) + r"[A-Za-z0-9_.\-]+")
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir() / "web")),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- helpers -------------------------------------------------------------------------------

    def language(self, request: Request, viewer: Viewer | None = None) -> str:
        chosen = request.session.get("lang")
        if chosen in i18n.LANGUAGES:
            return chosen
        if viewer is not None:
            with session_scope(self.app.session_factory) as s:
                stored = tq.customer_language(s, viewer.address)
            if stored in i18n.LANGUAGES:
                return stored
        for part in request.headers.get("accept-language", "").split(","):
            lang = part.split(";")[0].strip().lower()[:2]
            if lang in i18n.LANGUAGES:
                return lang
        return (
            self.app.settings.ingest.languages[0] if self.app.settings.ingest.languages[0] in i18n.LANGUAGES else "en"
        )

    def viewer(self, request: Request) -> Viewer | None:
        address = request.session.get("a")
        return viewer_for(self.app.settings, address) if isinstance(address, str) and address else None

    @staticmethod
    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str) or len(token) < 32:
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return token

    @staticmethod
    def csrf_ok(request: Request, form) -> bool:
        sent, mine = form.get("csrf"), request.session.get("csrf")
        return isinstance(sent, str) and isinstance(mine, str) and secrets.compare_digest(sent, mine)

    def render(self, request: Request, name: str, status: int = 200, viewer: Viewer | None = None, **ctx) -> Response:
        lang = ctx.pop("lang", None) or self.language(request, viewer)
        root = request.scope.get("root_path", "")
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        html = self.env.get_template(name).render(
            t=TEXT[lang],
            lang=lang,
            other_languages=[x for x in i18n.LANGUAGES if x != lang],
            viewer=viewer,
            csrf=self.csrf(request),
            root=root,
            here=here,
            **ctx,
        )
        return Response(
            html,
            status_code=status,
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            },
        )

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)

    def not_found(self, request: Request, viewer: Viewer | None, lang: str | None = None) -> Response:
        """The one 404 of the tracker: a case that does not exist and one the viewer may not see
        look the same. Never called inside a database session (the language may need one)."""
        return self.render(request, "not_found.html", 404, viewer, lang=lang)

    def sign_in_as(self, request: Request, address: str) -> None:
        lang = request.session.get("lang")
        request.session.clear()
        request.session["a"] = address
        request.session["csrf"] = secrets.token_urlsafe(32)
        if lang in i18n.LANGUAGES:
            request.session["lang"] = lang

    # -- pages -------------------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        return self.redirect(request, "/cases" if self.viewer(request) else "/signin")

    def signin_form(self, request: Request) -> Response:
        return self.render(request, "signin.html", address="", error=None)

    async def signin_post(self, request: Request) -> Response:
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.render(request, "signin.html", 403, address="", error="error_csrf")
        address = clean_address(str(form.get("address") or ""))
        lang = self.language(request)
        client = request.client.host if request.client else "-"
        if address is not None:
            await run_in_threadpool(self.signin.request, address, client, lang)
        # The same page whether the address is known, unknown, limited or malformed.
        return self.render(request, "sent.html")

    def signin_link(self, request: Request) -> Response:
        # A page with a button, not a sign-in on GET: mail scanners that fetch links must not spend it.
        return self.render(request, "confirm.html", token=request.path_params["token"])

    async def signin_redeem(self, request: Request) -> Response:
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.render(request, "signin.html", 403, address="", error="error_csrf")
        address = await run_in_threadpool(self.signin.redeem, request.path_params["token"])
        if address is None:
            return self.render(request, "invalid.html", 400, address="")
        self.sign_in_as(request, address)
        return self.redirect(request, "/cases")

    def case_link(self, request: Request) -> Response:
        links = self.app.case_links
        if links is None:
            return self.not_found(request, None)
        try:
            address, case_number = links.load(request.path_params["token"])
        except CaseLinkExpired as e:
            return self.render(request, "invalid.html", 410, address=e.address)
        except CaseLinkInvalid:
            return self.not_found(request, None)
        self.sign_in_as(request, address.lower())
        # A redirect, so the token leaves the address bar (and the browser's history of the page).
        return self.redirect(request, f"/cases/{case_number}")

    async def signout(self, request: Request) -> Response:
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.render(request, "signin.html", 403, address="", error="error_csrf")
        lang = request.session.get("lang")
        request.session.clear()
        if lang in i18n.LANGUAGES:
            request.session["lang"] = lang
        return self.redirect(request, "/signin")

    def set_language(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang in i18n.LANGUAGES:
            request.session["lang"] = lang
        nxt = request.query_params.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            nxt = "/"
        return RedirectResponse(request.scope.get("root_path", "") + nxt, status_code=303)

    def cases(self, request: Request) -> Response:
        viewer = self.viewer(request)
        if viewer is None:
            return self.redirect(request, "/signin")
        p = request.query_params
        sort = p.get("sort") if p.get("sort") in SORTS else "updated"
        descending = p.get("order") != "asc"
        try:
            page = max(1, min(int(p.get("page", "1")), 100000))
        except ValueError:
            page = 1
        text = (p.get("q") or "")[:MAX_SEARCH]
        size = self.app.settings.web.page_size
        lang = self.language(request, viewer)
        now = self.app.clock()
        with session_scope(self.app.session_factory) as s:
            statuses, severities, queues = tq.facets(s, viewer)
            chosen = {
                "status": p.get("status") if p.get("status") in statuses else "",
                "severity": p.get("severity") if p.get("severity") in severities else "",
                "queue": p.get("queue") if p.get("queue") in queues else "",
            }
            rows, total = tq.list_cases(
                s,
                viewer,
                text=text,
                status=chosen["status"] or None,
                severity=chosen["severity"] or None,
                queue=chosen["queue"] or None,
                sort=sort,
                descending=descending,
                page=page,
                page_size=size,
            )
        shown = [self._row(r, lang, now) for r in rows]
        pages = max(1, math.ceil(total / size))
        query = {"q": text, **chosen, "sort": sort, "order": "desc" if descending else "asc"}

        def page_url(n: int) -> str:
            return "/cases?" + urlencode({**{k: v for k, v in query.items() if v}, "page": n})

        return self.render(
            request,
            "list.html",
            viewer=viewer,
            lang=lang,
            rows=shown,
            total=plural(lang, total, *TEXT[lang]["n_cases"]),
            page=page,
            pages=pages,
            query=query,
            statuses=[(v, TEXT[lang].get(f"status_{v}", v)) for v in statuses],
            severities=[(v, self._severity_label(q, v, lang)) for q in queues[:1] for v in severities],
            queues=[(q, self._queue_label(q)) for q in queues],
            sorts=SORTS,
            prev_url=page_url(page - 1) if page > 1 else None,
            next_url=page_url(page + 1) if page < pages else None,
        )

    def _queue_label(self, name: str) -> str:
        q = next((q for q in self.app.settings.queues if q.name == name), None)
        return q.display_name if q is not None else name

    def _severity_label(self, queue: str, key: str | None, lang: str) -> str:
        if key is None:
            return TEXT[lang]["no_due"]
        level = self.app.deadlines.level(queue, key)
        return level.label(lang) if level is not None else key

    def _row(self, r: tq.CaseRow, lang: str, now: datetime) -> dict:
        tz = zone_of(self.app, r.queue, r.organisation)
        due = r.first_response_due if r.first_response_at is None else r.resolution_due
        done = r.status in ("solved", "closed")
        return {
            "case": r.case_number,
            "subject": r.subject,
            "status": TEXT[lang].get(f"status_{r.status}", r.status),
            "status_key": r.status,
            "severity": self._severity_label(r.queue, r.severity, lang),
            "queue": self._queue_label(r.queue),
            "due": i18n.when(due, tz, lang, now) if due is not None and not done else TEXT[lang]["no_due"],
            "late": due is not None and not done and due < now,
            "updated": i18n.when(r.updated_at, tz, lang, now),
            "created": i18n.when(r.created_at, tz, lang, now),
        }

    def case_page(self, request: Request) -> Response:
        viewer = self.viewer(request)
        if viewer is None:
            return self.redirect(request, "/signin")
        lang = self.language(request, viewer)
        now = self.app.clock()
        with session_scope(self.app.session_factory) as s:
            t = tq.case_for(s, viewer, request.path_params["case"])
            if t is None:
                log.info("tracker_case_not_found", by=viewer.address, case=request.path_params["case"][:40])
                return self.not_found(request, viewer, lang)
            tz = zone_of(self.app, t.queue, t.organisation)
            queue_name = self._queue_label(t.queue)
            messages = []
            for m in tq.public_messages(s, t.id):
                if m.direction == "out":
                    who, address = queue_name, None
                else:
                    who, address = shown_sender(self.app.settings, viewer, m.sender_email, m.sender_name)
                    who = who or TEXT[lang]["contact"]
                full = m.body_text or ""
                if m.direction == "out":
                    plain = f"{self.app.settings.web.base_url}cases/{t.case_number}"
                    full = self._case_link_re.sub(plain, full)
                new = m.body_new if m.direction == "in" and m.body_new is not None else full
                messages.append(
                    {
                        "id": m.id,
                        "out": m.direction == "out",
                        "who": who,
                        "address": address,
                        "at": i18n.when(m.date or m.created_at, tz, lang, now),
                        "new": new.strip(),
                        "full": full.strip() if full.strip() != new.strip() else None,
                        "files": [
                            {"id": a.id, "name": a.filename, "size": _size(a.size, lang)}
                            for a in m.attachments
                            if m.direction == "in"
                        ],
                    }
                )
            case = {
                "number": t.case_number,
                "subject": t.subject,
                "status": TEXT[lang].get(f"status_{t.status}", t.status),
                "status_key": t.status,
                "severity": self._severity_label(t.queue, t.severity, lang),
                "queue": queue_name,
                "created": i18n.when(t.created_at, tz, lang, now),
                "updated": i18n.when(t.updated_at, tz, lang, now),
                "sla": i18n.sla_words(t, tz, lang, now),
                "closed": t.status == "closed",
            }
            linked = [
                {"number": n, "subject": subj, "status": TEXT[lang].get(f"status_{st}", st)}
                for n, subj, st in tq.linked_cases(s, viewer, t)
            ]
        return self.render(
            request,
            "case.html",
            viewer=viewer,
            lang=lang,
            case=case,
            messages=messages,
            linked=linked,
            done=request.query_params.get("done", ""),
            error=None,
            limit=_size(self.app.settings.ingest.max_message_bytes, lang),
        )

    def attachment(self, request: Request) -> Response:
        viewer = self.viewer(request)
        if viewer is None:
            return self.redirect(request, "/signin")
        try:
            attachment_id = int(request.path_params["id"])
        except ValueError:
            return self.not_found(request, viewer)
        with session_scope(self.app.session_factory) as s:
            row = tq.attachment_for(s, viewer, request.path_params["case"], attachment_id)
            if row is not None:
                s.expunge(row)
        if row is None:
            return self.not_found(request, viewer)
        path = self.app.attachment_store.root / self.app.attachment_store.relpath(row.sha256)
        if not path.is_file():
            log.error("attachment_file_missing", attachment=row.id, sha256=row.sha256)
            return self.not_found(request, viewer)
        log.info("tracker_attachment_downloaded", attachment=row.id, by=viewer.address)
        return FileResponse(
            path,
            media_type=safe_media_type(row.content_type),
            headers={
                "Content-Disposition": content_disposition(row.filename),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )

    async def comment(self, request: Request) -> Response:
        return await self._submit(request, urgency=False)

    async def urgency(self, request: Request) -> Response:
        return await self._submit(request, urgency=True)

    async def _submit(self, request: Request, *, urgency: bool) -> Response:
        viewer = self.viewer(request)
        form = await request.form(max_files=MAX_FILES, max_fields=20)
        if not self.csrf_ok(request, form):
            log.warning("tracker_csrf_refused", path=request.url.path)
            return self.render(request, "signin.html", 403, viewer, address="", error="error_csrf")
        if viewer is None:
            return self.redirect(request, "/signin")
        lang = self.language(request, viewer)
        with session_scope(self.app.session_factory) as s:
            t = tq.case_for(s, viewer, request.path_params["case"])
            if t is not None:
                s.expunge(t)
            name = tq.participant_name(s, viewer.address)
        if t is None:
            return self.not_found(request, viewer)
        text = str(form.get("reason" if urgency else "text") or "").strip()
        if not text:
            return self.redirect(request, f"/cases/{t.case_number}?done=empty")
        if urgency:
            words = TEXT[lang]
            text = f"{words['urgency_text']}\n\n{words['urgency_reason_prefix']}: {text}"
        files = []
        if not urgency:
            for f in form.getlist("files"):
                if isinstance(f, UploadFile) and f.filename:
                    files.append(Upload(f.filename, f.content_type or "", await f.read()))
        try:
            result = await run_in_threadpool(self.comments.submit, viewer, name, t, text, files)
        except TooLarge:
            return self.redirect(request, f"/cases/{t.case_number}?done=too_large")
        done = "urgency" if urgency else ("new_case" if result.case_number != t.case_number else "comment")
        return self.redirect(request, f"/cases/{result.case_number or t.case_number}?done={done}")


def _size(n: int, lang: str) -> str:
    if n < 1024 * 1024:
        return f"{format_decimal(max(1, round(n / 1024)), locale=lang)} KB"
    return f"{format_decimal(round(n / 1024 / 1024, 1), locale=lang)} MB"


def tracker_routes(tracker: Tracker) -> list[Route]:
    t = tracker
    return [
        Route("/", t.home, methods=["GET"]),
        Route("/signin", t.signin_form, methods=["GET"]),
        Route("/signin", t.signin_post, methods=["POST"]),
        Route("/signin/{token}", t.signin_link, methods=["GET"]),
        Route("/signin/{token}", t.signin_redeem, methods=["POST"]),
        Route("/signout", t.signout, methods=["POST"]),
        Route("/c/{token}", t.case_link, methods=["GET"]),
        Route("/lang/{lang}", t.set_language, methods=["GET"]),
        Route("/cases", t.cases, methods=["GET"]),
        Route("/cases/{case}", t.case_page, methods=["GET"]),
        Route("/cases/{case}/files/{id}", t.attachment, methods=["GET"]),
        Route("/cases/{case}/comment", t.comment, methods=["POST"]),
        Route("/cases/{case}/urgency", t.urgency, methods=["POST"]),
    ]

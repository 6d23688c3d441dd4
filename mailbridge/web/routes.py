"""The web app's routes.

- ``/healthz``: 200 when the database answers ``SELECT 1``, else 503.
- ``/attachments/{token}``: an attachment too large for a notification, for the agent the link was
  sent to (``outbound/links.py``): the token must carry our signature, be younger than
  ``web.link_days``, and its address must still be an agent or notification address of the case's
  queue (``may_download``). Anything else gets the same 404, so a guess learns nothing. The file is
  streamed from the content store as a download (``Content-Disposition: attachment`` with RFC 6266
  ``filename*``), never shown inline, with ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailbridge.app import App
from mailbridge.outbound.links import may_download
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope
from mailbridge.store.metrics_queries import database_answers

log = structlog.get_logger(__name__)

_NOT_FOUND = "not found (the link is wrong, expired, or no longer yours)\n"
# RFC 2045 type/subtype tokens; anything else is served as application/octet-stream.
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")
# What may stand in the quoted ASCII fallback name: printable ASCII without quote and backslash.
_ASCII_NAME_BAD_RE = re.compile(r'[^\x20-\x7e]|["\\%]')


def _app(request: Request) -> App:
    return request.app.state.mailbridge


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback ``filename`` and the exact name as RFC 5987/6266
    ``filename*`` (UTF-8, percent-encoded)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = _ASCII_NAME_BAD_RE.sub("_", ascii_name).strip()
    stem, dot, ext = ascii_name.rpartition(".")
    if not ascii_name or (dot and not stem.strip(" .")):
        ascii_name = f"attachment.{ext}" if dot and ext else "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def safe_media_type(content_type: str | None) -> str:
    """A stored file's type when it is a well-formed type/subtype, else application/octet-stream."""
    return content_type if _CONTENT_TYPE_RE.fullmatch(content_type or "") else "application/octet-stream"


def healthz(request: Request) -> Response:
    try:
        database_answers(_app(request).engine)
    except Exception as e:
        log.warning("web_health_database", error=type(e).__name__)
        return PlainTextResponse("database does not answer\n", status_code=503)
    return PlainTextResponse("ok\n")


def attachment(request: Request) -> Response:
    app = _app(request)
    links = app.attachment_links
    claim = links.verify(request.path_params["token"]) if links is not None else None
    if claim is None:
        return PlainTextResponse(_NOT_FOUND, status_code=404)
    attachment_id, address = claim
    with session_scope(app.session_factory) as s:
        row = repo.attachment_for_download(s, attachment_id)
    queue = next((q for q in app.settings.queues if row is not None and q.name == row.queue), None)
    if row is None or queue is None or not may_download(queue, address):
        log.warning("attachment_download_refused", attachment=attachment_id, to=address)
        return PlainTextResponse(_NOT_FOUND, status_code=404)
    path = app.attachment_store.root / app.attachment_store.relpath(row.sha256)
    if not path.is_file():
        log.error("attachment_file_missing", attachment=attachment_id, sha256=row.sha256)
        return PlainTextResponse(_NOT_FOUND, status_code=404)
    media_type = safe_media_type(row.content_type)
    log.info("attachment_downloaded", attachment=attachment_id, to=address, size=row.size)
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition(row.filename),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/attachments/{token}", attachment, methods=["GET", "HEAD"]),
    ]

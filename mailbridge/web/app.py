"""The web app's factory: one Starlette application over an :class:`~mailbridge.app.App` (its
settings, database, content store and link signer); the routes are in ``routes.py``."""

from __future__ import annotations

import hashlib
import hmac

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from mailbridge.app import App
from mailbridge.resources import templates_dir
from mailbridge.web.routes import routes
from mailbridge.web.tracker import Tracker, tracker_routes

# The session cookie's name.
SESSION_COOKIE = "mailbridge_session"


def session_key(secret: str) -> str:
    """The key that signs session cookies: derived from the [web] key for this purpose alone, so a
    session cookie is never a valid link token and the other way round."""
    return hmac.new(secret.encode(), b"mailbridge/tracker-session/v1", hashlib.sha256).hexdigest()


def create_app(app: App) -> Starlette:
    """The ASGI application; ``request.app.state.mailbridge`` is ``app``. The case tracker is served
    when ``[web] base_url`` and its key are set (its links and sessions need both)."""
    web_settings = app.settings.web
    all_routes = list(routes())
    middleware = []
    if web_settings.base_url is not None and web_settings.secret is not None:
        tracker = Tracker(app)
        all_routes += tracker_routes(tracker)
        all_routes.append(
            Mount("/static", StaticFiles(directory=str(templates_dir() / "web" / "static")), name="static")
        )
        middleware.append(
            Middleware(
                SessionMiddleware,
                secret_key=session_key(web_settings.secret.get_secret_value()),
                session_cookie=SESSION_COOKIE,
                max_age=int(web_settings.session_hours * 3600),
                same_site="lax",
                https_only=web_settings.base_url.startswith("https:"),
            )
        )
    web = Starlette(routes=all_routes, middleware=middleware)
    web.state.mailbridge = app
    return web


def server(app: App, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for the app at ``[web] listen`` (or ``host``/``port``). No access log: a
    download URL carries its token, which is as good as the file; routes log what they serve."""
    h, p = app.settings.web.address
    config = uvicorn.Config(
        create_app(app),
        host=host or h,
        port=p if port is None else port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return uvicorn.Server(config)

"""The web app's factory: one Starlette application over an :class:`~mailbridge.app.App` (its
settings, database, content store and link signer); the routes are in ``routes.py``."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from mailbridge.app import App
from mailbridge.web.routes import routes


def create_app(app: App) -> Starlette:
    """The ASGI application; ``request.app.state.mailbridge`` is ``app``."""
    web = Starlette(routes=routes())
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

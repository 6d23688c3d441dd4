"""Where the migrations and templates are: inside the package in a wheel, at the checkout's top
level in an editable install (see ``force-include`` in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(packaged: str, top_level: str) -> Path:
    for p in (_PKG / packaged, _PKG.parent / top_level):
        if p.is_dir():
            return p
    raise FileNotFoundError(f"neither {_PKG / packaged} nor {_PKG.parent / top_level} exists")


def alembic_dir() -> Path:
    return _find("_alembic", "alembic")


def templates_dir() -> Path:
    return _find("_templates", "templates")

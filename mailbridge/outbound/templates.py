"""Jinja2 over ``templates/<lang>/``: sandboxed, StrictUndefined, autoescaping for HTML.

Customer text is only ever passed in as data; the sandbox and autoescaping keep a subject like
``{{ 7*7 }}`` or ``<script>`` inert in every mail we render.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from mailbridge.resources import templates_dir


class Templates:
    """Renders ``<lang>/<name>`` and falls back to ``fallback_language`` when a translation is missing."""

    def __init__(self, root: Path | None = None, fallback_language: str = "en"):
        self.root = Path(root) if root else templates_dir()
        self.fallback_language = fallback_language
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.root)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, language: str, name: str, /, **context) -> str:
        try:
            template = self.env.get_template(f"{language}/{name}")
        except TemplateNotFound:
            template = self.env.get_template(f"{self.fallback_language}/{name}")
        return template.render(**context)

    def has(self, language: str, name: str) -> bool:
        return (self.root / language / name).is_file()

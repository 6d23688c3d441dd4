"""The agents' cheat sheet exists once: ``templates/<lang>/help.txt.j2`` is the ``#help`` mail, and the
README shows the same text (German and English). A change to one without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbridge.ingest.commands import ALIASES, COMMANDS
from mailbridge.outbound.templates import Templates

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(lang: str) -> str:
    m = re.search(
        rf"<!-- cheat-sheet:{lang}\b[^>]*-->\n```text\n(.*?)\n```\n<!-- /cheat-sheet:{lang} -->",
        README.read_text(encoding="utf-8"),
        re.DOTALL,
    )
    assert m is not None, f"README has no cheat-sheet block for {lang}"
    return m.group(1)


@pytest.mark.parametrize("lang", ["de", "en"])
def test_readme_shows_the_help_mail(lang):
    assert _readme_block(lang) == Templates().render(lang, "help.txt.j2").rstrip("\n")


@pytest.mark.parametrize("lang", ["de", "en"])
def test_cheat_sheet_names_every_command_and_alias(lang):
    text = Templates().render(lang, "help.txt.j2")
    for name in [*COMMANDS, *ALIASES]:
        # The ASCII spellings of the German aliases (#geloest, #schliessen) go unmentioned.
        if name in ("geloest", "schliessen", "solved", "closed", "priority", "empfangen"):
            continue
        assert f"#{name}" in text, name


@pytest.mark.parametrize("lang", ["de", "en"])
def test_cheat_sheet_fits_one_screen(lang):
    lines = Templates().render(lang, "help.txt.j2").splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 80

"""Plurals in templates: babel's plural rules of the template's language, inside the sandbox."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from jinja2.sandbox import SecurityError

from mailbridge.outbound.templates import Templates, plural

LINE = {
    "de": 'Wir haben {{ attachments|plural("Anhang", "Anhänge") }} erhalten.',
    "en": 'We received {{ attachments|plural("attachment", "attachments") }}.',
}


@pytest.fixture
def templates(tmp_path):
    for language, line in LINE.items():
        (tmp_path / language).mkdir()
        (tmp_path / language / "count.txt.j2").write_text(line, encoding="utf-8")
        (tmp_path / language / "count.html.j2").write_text(line, encoding="utf-8")
    return Templates(root=tmp_path)


@pytest.mark.parametrize(
    ("language", "count", "expected"),
    [
        ("de", 0, "Wir haben 0 Anhänge erhalten."),
        ("de", 1, "Wir haben 1 Anhang erhalten."),
        ("de", 2, "Wir haben 2 Anhänge erhalten."),
        ("en", 0, "We received 0 attachments."),
        ("en", 1, "We received 1 attachment."),
        ("en", 2, "We received 2 attachments."),
    ],
)
def test_plural_follows_the_template_language(templates, language, count, expected):
    """A list counts its length; the form is chosen by the rules of the template's language."""
    assert templates.render(language, "count.txt.j2", attachments=["x.log"] * count) == expected


def test_plural_takes_a_number_and_formats_it_for_the_language(tmp_path):
    (tmp_path / "de").mkdir()
    (tmp_path / "en").mkdir()
    (tmp_path / "de" / "n.txt.j2").write_text('{{ n|plural("Anhang", "Anhänge") }}', encoding="utf-8")
    (tmp_path / "en" / "n.txt.j2").write_text('{{ n|plural("file", "files") }}', encoding="utf-8")
    t = Templates(root=tmp_path)
    assert t.render("de", "n.txt.j2", n=1) == "1 Anhang"
    assert t.render("de", "n.txt.j2", n=1000) == "1.000 Anhänge"
    assert t.render("en", "n.txt.j2", n=1000) == "1,000 files"


def test_plural_without_the_number(tmp_path):
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "w.txt.j2").write_text(
        '{{ n }} {{ n|plural("Anhang", "Anhänge", number=False) }}', encoding="utf-8"
    )
    t = Templates(root=tmp_path)
    assert t.render("de", "w.txt.j2", n=1) == "1 Anhang"
    assert t.render("de", "w.txt.j2", n=3) == "3 Anhänge"


def test_a_fallback_template_counts_in_its_own_language(templates):
    """A customer language without templates gets the English template, counted by English rules."""
    assert templates.render("fr", "count.txt.j2", attachments=[]) == "We received 0 attachments."
    assert templates.render("fr", "count.txt.j2", attachments=["a"]) == "We received 1 attachment."


def test_html_templates_still_escape_the_words(templates):
    assert templates.render("en", "count.html.j2", attachments=["a", "b"]) == "We received 2 attachments."


def test_a_missing_count_is_an_error(templates):
    with pytest.raises(UndefinedError):
        templates.render("de", "count.txt.j2")


@pytest.mark.parametrize("bad", ["3", 2.5, None, True])
def test_a_count_must_be_a_whole_number(tmp_path, bad):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "n.txt.j2").write_text('{{ n|plural("file", "files") }}', encoding="utf-8")
    with pytest.raises(TypeError):
        Templates(root=tmp_path).render("en", "n.txt.j2", n=bad)


def test_more_plural_forms_by_keyword():
    """Languages with more CLDR forms (Polish: one, few, many) take them by keyword."""
    forms = {"few": "pliki", "many": "plików"}
    assert [plural("pl", n, "plik", "pliku", **forms) for n in (1, 2, 5, 22)] == [
        "1 plik",
        "2 pliki",
        "5 plików",
        "22 pliki",
    ]
    # German has no "few": a form it does not use is ignored.
    assert plural("de", 3, "Anhang", "Anhänge", few="x") == "3 Anhänge"
    with pytest.raises(TypeError):
        plural("de", 3, "Anhang", "Anhänge", several="x")


def test_customer_text_in_the_words_stays_inert(tmp_path):
    """Even when the words come from data, they are printed, never evaluated."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "n.txt.j2").write_text("{{ n|plural(one, other) }}", encoding="utf-8")
    out = Templates(root=tmp_path).render("en", "n.txt.j2", n=2, one="x", other="{{ 7*7 }}")
    assert out == "2 {{ 7*7 }}"


@pytest.mark.parametrize(
    "source",
    [
        '{% set s = n|plural("a", "b") %}{{ s.__class__.__mro__ }}',
        '{{ (n|plural("a", "b")).__class__.__base__.__subclasses__() }}',
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_environment_with_the_filter_is_still_sandboxed(tmp_path, source):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "evil.txt.j2").write_text(source, encoding="utf-8")
    with pytest.raises(SecurityError):
        Templates(root=tmp_path).render("en", "evil.txt.j2", n=2)


def test_shipped_templates_use_a_sandboxed_environment():
    from jinja2.sandbox import SandboxedEnvironment

    t = Templates()
    assert isinstance(t.env, SandboxedEnvironment)
    assert "plural" in t.env.filters

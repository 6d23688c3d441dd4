"""`mailbridge report open-items|history|sla|volume` over a week of cases made by real mail (pymap in,
aiosmtpd out, the real pipeline, SQLite and PostgreSQL) with an injected clock; every figure is the
hand-computed one of ``report_support.py`` (the cases and their arithmetic are there). The files are
read back: CSV with the csv module (also ``;`` with a BOM), XLSX with openpyxl, the HTML page in
Chromium (Playwright), whose screenshot is kept."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from mailbridge.cli import cli
from mailbridge.reports import render
from tests.integration.report_support import NOW, Week, desk_week

BERLIN_OFFSET = "+01:00"


@pytest.fixture
def week(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    w = desk_week(tmp_path, imap_server, smtp_sink, db_url)
    yield w
    w.desk.app.close()


def _run(week: Week, *args: str, columns: int = 200) -> tuple[int, bytes, str]:
    """The command as a support lead runs it, at the desk's clock: exit code, stdout bytes, stderr."""
    result = CliRunner().invoke(
        cli,
        ["--config", str(week.desk.app.settings.source), "report", *args],
        obj={"clock": week.desk.clock},
        catch_exceptions=False,
        env={"COLUMNS": str(columns)},
    )
    return result.exit_code, result.stdout_bytes, result.stderr


def _csv(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=delimiter))


def _at(iso_local: str) -> str:
    return iso_local + BERLIN_OFFSET


def test_reports_of_a_week(week, tmp_path):
    """Each report's figures against the hand-computed ones, in text, CSV and XLSX."""
    c = week.cases
    # -- open items: the five open cases in working order (level 1 before 3, then oldest first) --
    code, out, err = _run(week, "open-items", "--format", "csv")
    assert code == 0, err
    rows = _csv(out)
    assert [r["CASE"] for r in rows] == [c["B"], c["F"], c["E"], c["C"], c["D"]]
    by_case = {r["CASE"]: r for r in rows}
    # B: Mon 15:00 -> Thu 12:00 is Mon 2 + Tue 9 + Wed 9 + Thu 4 = 24 business hours, 69 calendar
    # hours; its resolution was due Wed 13:00: overdue by 23 hours.
    b = by_case[c["B"]]
    assert (b["STATUS"], b["SEV"], b["AGE BUSINESS"], b["AGE CALENDAR"]) == ("open", "1", "24.00", "69.00")
    assert b["SLA"] == "overdue by 23 hours"
    assert (b["NEXT DEADLINE (Europe/Berlin)"], b["NEXT CLOCK"]) == (_at("2026-11-25T13:00:00"), "resolution")
    assert b["LAST CUSTOMER (Europe/Berlin)"] == _at("2026-11-23T15:00:00")
    assert b["LAST AGENT (Europe/Berlin)"] == _at("2026-11-24T11:00:00")
    # F: Wed 09:00 -> Thu 12:00 = Wed 8 + Thu 4 = 12 business hours, 27 calendar hours; its first
    # response was due Wed 13:00.
    f = by_case[c["F"]]
    assert (f["STATUS"], f["SEV"], f["AGE BUSINESS"], f["AGE CALENDAR"]) == ("new", "1", "12.00", "27.00")
    assert (f["SLA"], f["NEXT CLOCK"]) == ("overdue by 23 hours", "first response")
    assert f["LAST AGENT (Europe/Berlin)"] == ""
    # E: answered, reopened; its resolution clock (due Tue 1 Dec 09:00) has its 50 % stage at
    # Tue 8 + Wed 9 + Thu 5.5 = 22.5 h, Thu 13:30: on time at 12:00. Tue 09:00 -> Thu 12:00 = 8 + 9 + 4.
    e = by_case[c["E"]]
    assert (e["STATUS"], e["AGE BUSINESS"], e["SLA"]) == ("open", "21.00", "on time")
    assert e["NEXT DEADLINE (Europe/Berlin)"] == _at("2026-12-01T09:00:00")
    assert e["LAST CUSTOMER (Europe/Berlin)"] == _at("2026-11-25T11:00:00")
    assert e["LAST AGENT (Europe/Berlin)"] == _at("2026-11-24T09:30:00")
    # C: the 50 % stage of its first response (due Fri 10:00) is Thu 10:00: at risk.
    assert (by_case[c["C"]]["SLA"], by_case[c["C"]]["NEXT DEADLINE (Europe/Berlin)"]) == (
        "at risk",
        _at("2026-11-27T10:00:00"),
    )
    # D: Thu 08:30 -> 12:00 = 3.5 h both ways; its 50 % stage is Fri 08:30: on time.
    d = by_case[c["D"]]
    assert (d["AGE BUSINESS"], d["AGE CALENDAR"], d["SLA"]) == ("3.50", "3.50", "on time")
    assert d["NEXT DEADLINE (Europe/Berlin)"] == _at("2026-11-30T08:30:00")
    # A is closed: not an open item.
    assert c["A"] not in by_case

    # The terminal table: the zone named on every time, the counts above.
    code, out, _ = _run(week, "open-items")
    text = out.decode()
    assert code == 0
    assert "5 open cases: 2 overdue, 1 at risk, 2 on time, 0 paused, 0 without deadline" in text
    assert "2026-11-25 13:00 CET" in text and "overdue by 23 hours" in text
    # Narrow: every line fits, cut with "…".
    code, out, _ = _run(week, "open-items", columns=70)
    lines = out.decode().splitlines()
    assert code == 0 and all(len(line) <= 70 for line in lines) and any("…" in line for line in lines)

    # Filters.
    code, out, _ = _run(week, "open-items", "--severity", "3", "--format", "csv")
    assert [r["CASE"] for r in _csv(out)] == [c["E"], c["C"], c["D"]]

    # -- SLA compliance by severity, CSV for German Excel (";", decimal commas, a BOM) -------------
    code, out, err = _run(
        week,
        "sla",
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-26",
        "--by",
        "severity",
        "--format",
        "csv",
        "--csv-delimiter",
        ";",
        "--bom",
    )
    assert code == 0, err
    assert out.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(out.decode("utf-8-sig")), delimiter=";"))
    got = {r["GROUP"]: r for r in rows}
    assert list(got) == ["1", "3", "(all)"]
    # Level 1: A, B, F opened. First response: A met (1.5 h), B missed (5 h), F missed (not
    # answered, due Wed 13:00 passed): 1 of 3 = 33.3 %. Resolution: A met (10 h), B missed, F still
    # running: 1 of 2. Median of 1.5 and 5 = 3.25; p90 = 1.5 + 0.9 × 3.5 = 4.65. Backlog: B, F.
    one = got["1"]
    assert [one[k] for k in ("OPENED", "FR MET", "FR MISSED", "FR MET %")] == ["3", "1", "2", "33,3"]
    assert [one[k] for k in ("RES MET", "RES MISSED", "RES MET %")] == ["1", "1", "50,0"]
    assert [one[k] for k in ("FR MEDIAN", "FR P90", "RES MEDIAN", "RES P90")] == ["3,25", "4,65", "10,00", "10,00"]
    assert one["BACKLOG AT END"] == "2"
    # Level 3: E, C, D. E answered in 0.5 h (met); C, D still running. No resolution yet (E was
    # solved and reopened: its solution no longer counts). Backlog: E, C, D.
    three = got["3"]
    assert [three[k] for k in ("OPENED", "FR MET", "FR MISSED", "FR MET %")] == ["3", "1", "0", "100,0"]
    assert [three[k] for k in ("RES MET", "RES MISSED", "RES MET %", "FR MEDIAN")] == ["0", "0", "", "0,50"]
    assert three["BACKLOG AT END"] == "3"
    # All: 2 of 4 first responses met; first-response times 0.5, 1.5, 5: median 1.5, p90 = 1.5 +
    # 0.8 × 3.5 = 4.3 (position 0.9 × 2 = 1.8). Backlog at Thu 12:00 (the period ends later): 5.
    every = got["(all)"]
    assert [every[k] for k in ("OPENED", "FR MET", "FR MISSED", "FR MET %")] == ["6", "2", "2", "50,0"]
    assert [every[k] for k in ("FR MEDIAN", "FR P90", "BACKLOG AT END")] == ["1,50", "4,30", "5"]

    # Per week, from the week before: week 47 opened nothing and ended with no backlog.
    code, out, err = _run(
        week, "sla", "--from", "2026-11-16", "--to", "2026-11-26", "--period", "week", "--format", "csv"
    )
    assert code == 0, err
    rows = _csv(out)
    assert [(r["PERIOD"], r["OPENED"], r["BACKLOG AT END"]) for r in rows] == [
        ("2026-W47", "0", "0"),
        ("2026-W48", "6", "5"),
    ]
    assert rows[1]["FR MET %"] == "50.0"

    # -- volume per day and per week ------------------------------------------------------------
    code, out, err = _run(week, "volume", "--from", "2026-11-23", "--to", "2026-11-26", "--format", "csv")
    assert code == 0, err
    # Mon: A, B; Tue: E (reopened Wed); Wed: F (linked to the closed A), C; Thu: D.
    assert [
        (r["PERIOD"], r["OPENED"], r["REOPENED"], r["REOPEN RATE %"], r["LINKED TO A CLOSED CASE"]) for r in _csv(out)
    ] == [
        ("2026-11-23", "2", "0", "0.0", "0"),
        ("2026-11-24", "1", "1", "100.0", "0"),
        ("2026-11-25", "2", "0", "0.0", "1"),
        ("2026-11-26", "1", "0", "0.0", "0"),
    ]
    code, out, _ = _run(week, "volume", "--from", "2026-11-23", "--to", "2026-11-26", "--period", "week")
    # 1 reopened of 6 = 16.7 %.
    assert "6 opened, 1 reopened (reopen rate 16.7 %), 1 linked to a closed case" in out.decode()

    # -- history: one case, and one day of all cases --------------------------------------------
    code, out, err = _run(week, "history", "--case", c["A"].lower(), "--format", "csv")
    assert code == 0, err
    rows = _csv(out)
    whats = [r["WHAT"] for r in rows]
    assert whats[0] == "mail in (customer): Systemstillstand Linie 3"
    assert rows[0]["WHEN (Europe/Berlin)"] == _at("2026-11-23T09:00:00")
    assert rows[0]["WHO"] == "juergen.mueller@kunde.example" and rows[0]["MAIL"]
    first_response = next(r for r in rows if r["WHAT"].startswith("first response"))
    assert (first_response["WHEN (Europe/Berlin)"], first_response["WHO"]) == (
        _at("2026-11-23T10:30:00"),
        "anna.agent@vendor.example",
    )
    closed = next(r for r in rows if r["WHAT"].startswith("status changed") and "new=closed" in r["WHAT"])
    assert closed["WHEN (Europe/Berlin)"] == _at("2026-11-24T10:00:00")
    assert whats[-1] == f"follow up case: case={c['F']}; reason=closed-case"
    assert [r["WHEN (Europe/Berlin)"] for r in rows] == sorted(r["WHEN (Europe/Berlin)"] for r in rows)

    code, out, err = _run(week, "history", "--from", "2026-11-25", "--to", "2026-11-25", "--format", "csv")
    assert code == 0, err
    rows = _csv(out)
    assert {r["CASE"] for r in rows} == {c["A"], c["F"], c["C"], c["E"]}
    assert all(r["WHEN (Europe/Berlin)"].startswith("2026-11-25T") for r in rows)
    assert any(r["CASE"] == c["E"] and r["WHAT"].startswith("reopened") for r in rows)

    # -- XLSX: typed cells ----------------------------------------------------------------------
    target = tmp_path / "open.xlsx"
    code, out, err = _run(week, "open-items", "--format", "xlsx", "--output", str(target))
    assert code == 0, err
    assert f"{target}" in out.decode()
    book = openpyxl.load_workbook(target)
    sheet = book["Open items"]
    header = [cell.value for cell in sheet[1]]
    first = dict(zip(header, [cell.value for cell in sheet[2]], strict=True))
    assert first["CASE"] == c["B"]
    assert first["AGE BUSINESS"] == 24 and isinstance(first["AGE BUSINESS"], int | float)  # a number cell
    assert first["NEXT DEADLINE (Europe/Berlin)"] == datetime(2026, 11, 25, 13, 0)
    assert sheet.max_row == 6
    target = tmp_path / "sla.xlsx"
    assert (
        _run(week, "sla", "--from", "2026-11-23", "--to", "2026-11-26", "--format", "xlsx", "-o", str(target))[0] == 0
    )
    sheet = openpyxl.load_workbook(target)["SLA compliance"]
    header = [cell.value for cell in sheet[1]]
    row = dict(zip(header, [cell.value for cell in sheet[2]], strict=True))
    assert row["OPENED"] == 6 and row["FR MET %"] == pytest.approx(0.5) and row["FR P90"] == pytest.approx(4.3)
    assert sheet.cell(2, header.index("FR MET %") + 1).number_format == "0.0%"


def test_bad_parameters_are_named(week):
    code, _, err = _run(week, "open-items", "--queue", "nope")
    assert code == 2 and "queue: no queue 'nope' (queues: support, hotline)" in err
    code, _, err = _run(week, "sla", "--from", "2026-11-26", "--to", "2026-11-23")
    assert code == 2 and "from: 2026-11-26 is after to: 2026-11-23" in err
    code, _, err = _run(week, "history", "--case", "C9999999")
    assert code == 2 and "case: no case C9999999" in err


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium") and not os.environ.get("MAILBRIDGE_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sla_html_in_chromium_and_for_mail(week, tmp_path):
    """The HTML page opened in Chromium shows its title, the table and three drawn charts; a
    screenshot is kept (``MAILBRIDGE_REPORT_SCREENSHOT``: also there). For a mail, the charts are cid:
    images with their PNGs beside the page."""
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "sla.html"
    code, _, err = _run(
        week, "sla", "--from", "2026-11-16", "--to", "2026-11-26", "--period", "week", "--by", "severity",
        "--format", "html", "--output", str(page_file),
    )  # fmt: skip
    assert code == 0, err
    html = page_file.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3 and "cid:" not in html and "<script" not in html
    shot = tmp_path / "sla.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_file.as_uri())
            assert page.inner_text("h1") == "SLA compliance"
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert widths == [720, 720, 720]
            cells = page.eval_on_selector_all("table tr", "rows => rows.map(r => r.innerText)")
            assert len(cells) == 5  # the header; week 47: (all) only (nothing opened); week 48: 1, 3, (all)
            assert "2026-W48\t(all)\t6\t2\t2\t50.0 %" in "\n".join(cells)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("MAILBRIDGE_REPORT_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot.read_bytes())

    mailed = render(
        week.desk.app, "sla", {"from": "2026-11-16", "to": "2026-11-26", "period": "week"}, "html", now=NOW,
        for_mail=True,
    )  # fmt: skip
    page = mailed.data.decode()
    assert "data:image" not in page and len(mailed.images) == 3
    for cid, png in mailed.images:
        assert f'src="cid:{cid}"' in page and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert mailed.content_type == "text/html; charset=utf-8" and mailed.filename == "sla-2026-11-26.html"
    assert re.fullmatch(r"SLA 2026-11-16\.\.2026-11-26: 6 opened, first response met 50 %", mailed.summary)

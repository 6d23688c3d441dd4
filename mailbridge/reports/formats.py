"""A computed report in a format: the terminal table (rich, through ``views.Screen``), CSV (the csv
module; ``;`` and a BOM for German Excel), XLSX (xlsxwriter, typed cells) and HTML (Jinja2, charts
drawn by matplotlib's Agg backend as PNG, inline as data: URIs or, for a mail, as ``cid:`` images).

Times are shown in the report's zone, named: the text as ``2027-01-05 09:30 CET``, CSV as ISO 8601
with the offset, XLSX as the local time in a date cell whose header names the zone.
"""

from __future__ import annotations

import base64
import csv
import io
from datetime import datetime

from jinja2 import Environment

from mailbridge.reports import CONTENT_TYPES, EXTENSIONS, Rendered, ReportError
from mailbridge.reports.model import Chart, Field, Report


def render(report: Report, fmt: str, *, params: dict, now: datetime, width: int, for_mail: bool) -> Rendered:
    stem = f"{report.name}-{now.astimezone(report.tz).date().isoformat()}"
    if fmt == "text":
        data = text(report, width).encode("utf-8")
        images: list[tuple[str, bytes]] = []
    elif fmt == "csv":
        data = to_csv(report, delimiter=params.get("csv_delimiter") or ",", bom=bool(params.get("bom")))
        images = []
    elif fmt == "xlsx":
        data = to_xlsx(report)
        images = []
    elif fmt == "html":
        data, images = to_html(report, for_mail=for_mail, stem=stem)
    else:
        raise ReportError(f"no format {fmt!r}")
    return Rendered(data, CONTENT_TYPES[fmt], f"{stem}.{EXTENSIONS[fmt]}", images, report.summary)


# -- cells --------------------------------------------------------------------------------------


def shown(value, f: Field, report: Report) -> str:
    """A cell as text (terminal, HTML)."""
    if value is None:
        return "-"
    if f.kind == "time":
        return value.astimezone(report.tz).strftime("%Y-%m-%d %H:%M %Z")
    if f.kind == "hours":
        return f"{value:.1f} h"
    if f.kind == "pct":
        return f"{value * 100:.1f} %"
    return str(value)


def _csv_cell(value, f: Field, report: Report, decimal: str) -> str:
    if value is None:
        return ""
    if f.kind == "time":
        return value.astimezone(report.tz).isoformat(timespec="seconds")
    if f.kind == "hours":
        return f"{value:.2f}".replace(".", decimal)
    if f.kind == "pct":
        return f"{value * 100:.1f}".replace(".", decimal)
    return str(value)


def _header(f: Field, report: Report) -> str:
    if f.kind == "time":
        return f"{f.header} ({report.zone_name})"
    if f.kind == "pct":
        return f"{f.header} %"
    return f.header


# -- text ---------------------------------------------------------------------------------------


def text(report: Report, width: int | None = None) -> str:
    from mailbridge.views import Column, Screen

    screen = Screen(width)
    screen.line(report.title)
    for note in report.notes:
        screen.line("  " + note)
    for table in report.tables:
        screen.line()
        if len(report.tables) > 1:
            screen.line(table.title)
        if not table.rows:
            screen.line("  (none)")
            continue
        columns = [
            Column(
                f.header,
                ratio=f.ratio,
                min_width=f.min_width,
                optional=f.optional,
                justify="right" if f.kind in ("int", "hours", "pct") else "left",
            )
            for f in table.fields
        ]
        cells = [tuple(shown(v, f, report) for v, f in zip(row, table.fields, strict=True)) for row in table.rows]
        screen.table(columns, cells)
    return screen.text() + "\n"


# -- CSV ----------------------------------------------------------------------------------------


def to_csv(report: Report, *, delimiter: str = ",", bom: bool = False) -> bytes:
    """UTF-8 CSV, one header row per table (a report of several tables: a blank row and the table's
    title between them). ``delimiter`` ``;`` also makes the decimal separator a comma (German Excel);
    ``bom``: a UTF-8 byte order mark first, which Excel needs to read UTF-8."""
    if delimiter not in (",", ";", "\t"):
        raise ReportError(f"csv_delimiter: {delimiter!r} is not one of ',', ';' or a tab")
    decimal = "," if delimiter == ";" else "."
    out = io.StringIO()
    w = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    for i, table in enumerate(report.tables):
        if len(report.tables) > 1:
            if i:
                w.writerow([])
            w.writerow([table.title])
        w.writerow([_header(f, report) for f in table.fields])
        for row in table.rows:
            w.writerow([_csv_cell(v, f, report, decimal) for v, f in zip(row, table.fields, strict=True)])
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


# -- XLSX ---------------------------------------------------------------------------------------


def to_xlsx(report: Report) -> bytes:
    """One sheet per table; numbers, percentages and times as typed cells (times: local to the
    report's zone, which the header names), the header row frozen, with an autofilter."""
    import xlsxwriter

    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True, "remove_timezone": True})
    bold = book.add_format({"bold": True})
    formats = {
        "time": book.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
        "hours": book.add_format({"num_format": "0.0"}),
        "pct": book.add_format({"num_format": "0.0%"}),
        "int": book.add_format({"num_format": "0"}),
    }
    used: set[str] = set()
    for table in report.tables:
        name = _sheet_name(table.title, used)
        sheet = book.add_worksheet(name)
        widths = []
        for c, f in enumerate(table.fields):
            header = _header(f, report).replace(" %", "")
            sheet.write_string(0, c, header, bold)
            widths.append(len(header))
        for r, row in enumerate(table.rows, start=1):
            for c, (v, f) in enumerate(zip(row, table.fields, strict=True)):
                if v is None:
                    sheet.write_blank(r, c, None)
                elif f.kind == "time":
                    sheet.write_datetime(r, c, v.astimezone(report.tz).replace(tzinfo=None), formats["time"])
                    widths[c] = max(widths[c], 16)
                elif f.kind in ("int", "hours", "pct"):
                    sheet.write_number(r, c, v, formats[f.kind])
                    widths[c] = max(widths[c], 8)
                else:
                    sheet.write_string(r, c, str(v))
                    widths[c] = max(widths[c], min(60, len(str(v))))
        for c, w in enumerate(widths):
            sheet.set_column(c, c, w + 2)
        sheet.freeze_panes(1, 0)
        if table.fields:
            sheet.autofilter(0, 0, max(1, len(table.rows)), len(table.fields) - 1)
    info = book.add_worksheet(_sheet_name("About", used))
    for r, line in enumerate([report.title, *report.notes]):
        info.write_string(r, 0, line, bold if r == 0 else None)
    book.close()
    return buf.getvalue()


def _sheet_name(title: str, used: set[str]) -> str:
    base = "".join(ch for ch in title if ch not in "[]:*?/\\")[:28] or "Sheet"
    name, n = base, 2
    while name.lower() in used:
        name, n = f"{base} {n}", n + 1
    used.add(name.lower())
    return name


# -- HTML ---------------------------------------------------------------------------------------

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ report.title }}</title>
<style>
body { font-family: Arial, Helvetica, sans-serif; color: #222; margin: 24px; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 24px 0 8px 0; }
p.note { margin: 2px 0; color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th { background: #eef1f5; text-align: left; padding: 4px 8px; border-bottom: 2px solid #c9d0da; }
td { padding: 3px 8px; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
td.time { white-space: nowrap; }
.charts img { display: block; margin: 12px 0; max-width: 100%; }
</style>
</head>
<body>
<h1>{{ report.title }}</h1>
{% for note in report.notes %}<p class="note">{{ note }}</p>
{% endfor %}
{% if charts %}<div class="charts">
{% for title, src in charts %}<img src="{{ src }}" alt="{{ title }}" width="720">
{% endfor %}</div>{% endif %}
{% for table in tables %}
<h2>{{ table.title }}</h2>
{% if table.rows %}<table>
<tr>{% for h in table.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr>{% for cls, cell in row %}<td class="{{ cls }}">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p class="note">(none)</p>{% endif %}
{% endfor %}
</body>
</html>
"""

_env = Environment(autoescape=True)
_template = _env.from_string(_HTML)


def to_html(report: Report, *, for_mail: bool, stem: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The page, and for a mail the charts as (content id, PNG) referenced as ``cid:``."""
    charts, images = [], []
    for i, chart in enumerate(report.charts):
        png = chart_png(chart)
        if for_mail:
            cid = f"chart{i + 1}.{stem}@mailbridge"
            images.append((cid, png))
            charts.append((chart.title, f"cid:{cid}"))
        else:
            charts.append((chart.title, "data:image/png;base64," + base64.b64encode(png).decode("ascii")))
    tables = []
    for table in report.tables:
        cls = ["num" if f.kind in ("int", "hours", "pct") else "time" if f.kind == "time" else "" for f in table.fields]
        tables.append(
            {
                "title": table.title,
                "headers": [f.header for f in table.fields],
                "rows": [
                    [(c, shown(v, f, report)) for v, f, c in zip(row, table.fields, cls, strict=True)]
                    for row in table.rows
                ],
            }
        )
    html = _template.render(report=report, charts=charts, tables=tables)
    return html.encode("utf-8"), images


def chart_png(chart: Chart) -> bytes:
    """The chart drawn by matplotlib (Agg, no pyplot: safe in threads) as a PNG 720x320."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if chart.kind == "line":
        for name, ys in chart.series.items():
            ax.plot(range(len(chart.x)), [float("nan") if y is None else y for y in ys], marker="o", label=name)
        ax.set_xticks(range(len(chart.x)), [str(x) for x in chart.x], rotation=30, ha="right", fontsize=8)
    elif chart.kind == "bar":
        bottom = [0.0] * len(chart.x)
        for name, ys in chart.series.items():
            vals = [y or 0 for y in ys]
            ax.bar(range(len(chart.x)), vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(chart.x)), [str(x) for x in chart.x], fontsize=8)
    else:
        ax.hist(chart.values, bins=chart.bins or 10, color="#4c72b0", edgecolor="white")
    ax.set_title(chart.title, fontsize=11)
    ax.set_xlabel(chart.xlabel, fontsize=9)
    ax.set_ylabel(chart.ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if chart.kind != "hist" and len(chart.series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

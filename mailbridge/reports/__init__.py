"""Reports for support leads: open items, the processing history, SLA compliance and volume — as a
terminal table, CSV, XLSX or a self-contained HTML page with charts.

Each report (``open_items.py``, ``history.py``, ``sla.py``, ``volume.py``) computes a
:class:`~mailbridge.reports.model.Report` (typed rows, charts, the time zone) from the stored
clocks and events only (``store/report_queries.py``); ``formats.py`` turns it into bytes. Nothing
here sends mail: the scheduled reports (``[[reports]]``) call :func:`render` and mail the result.

The interface the scheduler and the CLI call::

    render(app, "open-items", {"queue": "support"}, "csv", now=now) -> Rendered
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

REPORTS = ("open-items", "history", "sla", "volume")
FORMATS = ("text", "csv", "xlsx", "html")

CONTENT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
}
EXTENSIONS = {"text": "txt", "csv": "csv", "xlsx": "xlsx", "html": "html"}


class ReportError(ValueError):
    """A report cannot be made with these parameters (an unknown queue, --from after --to, …); the
    message says which parameter and why."""


@dataclass
class Rendered:
    data: bytes  # the file (csv/xlsx/html) or the text (UTF-8)
    content_type: str  # see CONTENT_TYPES
    filename: str  # e.g. "open-items-2027-01-05.csv"
    # For HTML made to be mailed: (content_id, png); the HTML references them as cid:<content_id>.
    images: list[tuple[str, bytes]] = field(default_factory=list)
    summary: str = ""  # one line for a mail subject / log


def build(app, name: str, params: dict, *, now: datetime):
    """The report ``name`` computed at ``now`` (a :class:`~mailbridge.reports.model.Report`)."""
    from mailbridge.reports import history, open_items, sla, volume

    builders = {
        "open-items": open_items.build,
        "history": history.build,
        "sla": sla.build,
        "volume": volume.build,
    }
    if name not in builders:
        raise ReportError(f"no report {name!r} (reports: {', '.join(REPORTS)})")
    return builders[name](app, dict(params or {}), now)


def render(
    app, name: str, params: dict, fmt: str, *, now: datetime, width: int = 100, for_mail: bool = False
) -> Rendered:
    """The report ``name`` with ``params`` (the CLI's options as a dict: ``queue``, ``organisation``,
    ``severity``, ``case``, ``from``, ``to``, ``by``, ``period``, ``csv_delimiter``, ``bom``) in
    ``fmt``. ``width``: the text table's width. ``for_mail``: HTML whose charts are ``cid:`` images
    (in :attr:`Rendered.images`) instead of data: URIs."""
    from mailbridge.reports import formats

    if fmt not in FORMATS:
        raise ReportError(f"no format {fmt!r} (formats: {', '.join(FORMATS)})")
    report = build(app, name, params, now=now)
    return formats.render(report, fmt, params=params or {}, now=now, width=width, for_mail=for_mail)

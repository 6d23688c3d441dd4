"""What a report is before it has a format: typed rows (so a spreadsheet gets numbers and times, not
text), the charts' data, and the zone its times are shown in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Literal

# text: a string; int; hours: business or calendar hours as a float; pct: a share 0..1 (None: no
# cases to count); time: an aware datetime, shown in the report's zone.
Kind = Literal["text", "int", "hours", "pct", "time"]


@dataclass(frozen=True)
class Field:
    header: str
    kind: Kind = "text"
    # How the terminal table treats it (views.Column): share of the flexible space, its minimum,
    # the rank in which optional columns are left out on a narrow terminal.
    ratio: int | None = None
    min_width: int | None = None
    optional: int | None = None


@dataclass
class Table:
    title: str
    fields: list[Field]
    rows: list[tuple] = field(default_factory=list)


@dataclass
class Chart:
    """A chart for the HTML report: ``line`` (one line per series over ``x``), ``bar`` (bars per
    ``x``, stacked series) or ``hist`` (``values`` in ``bins``)."""

    title: str
    kind: Literal["line", "bar", "hist"]
    x: list = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    values: list[float] = field(default_factory=list)
    bins: list[float] = field(default_factory=list)
    xlabel: str = ""
    ylabel: str = ""


@dataclass
class Report:
    name: str  # "open-items"
    title: str  # "Open items"
    tz: tzinfo  # the zone every time is shown in
    notes: list[str] = field(default_factory=list)  # lines under the title: filters, period, zone
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    summary: str = ""
    generated: datetime | None = None

    @property
    def zone_name(self) -> str:
        return getattr(self.tz, "key", None) or str(self.tz)

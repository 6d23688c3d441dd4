"""When a response target falls due on a business calendar (``due``). Pure: nothing here reads a
clock or the database.

The policy's values - targets, stages and their recipients, severity levels and schemes with the
detection of the level a mail asks for - are in ``mailbridge/policy_types.py``, below the settings
that build them from the configuration; they are re-exported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mailbridge.policy_types import (
    DEFAULT_STAGES,
    Recipients,
    SeverityLevel,
    SeverityScheme,
    Stage,
    Target,
    TargetKind,
)
from mailbridge.sla.calendar import BusinessCalendar, add_business_days, add_business_time, add_calendar_time

__all__ = [
    "DEFAULT_STAGES",
    "Recipients",
    "SeverityLevel",
    "SeverityScheme",
    "Stage",
    "Target",
    "TargetKind",
    "due",
]


def due(cal: BusinessCalendar, start: datetime, target: Target) -> datetime:
    """When ``target`` falls due for something that started at ``start`` (aware UTC result)."""
    if target.kind == TargetKind.BUSINESS_HOURS:
        return add_business_time(cal, start, timedelta(hours=target.amount))
    if target.kind == TargetKind.BUSINESS_DAYS:
        return add_business_days(cal, start, int(target.amount))
    return add_calendar_time(cal, start, timedelta(hours=target.amount))

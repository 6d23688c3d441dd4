"""The plain values of a service-level policy: response targets, the escalation ladder's stages and
their recipients, severity levels and schemes (which level a customer's mail asks for).

They sit below the settings, which build and check them from the configuration; the rules that use
them with a business calendar (when a target falls due, the clocks, escalations) are in
``mailbridge/sla/``. Pure: nothing here reads a clock, a calendar or the database.

A **target** is a duration of one kind: business hours ("4 business hours": open time only), business
days ("2 business days": the same time of day two business days later), or calendar time ("one
week": wall clock, also outside the hours); ``mailbridge.sla.policy.due`` computes when it falls due.

A **severity scheme** is a list of levels, each with German and English labels, the words that
detect it in a customer's mail (subject and new text; whole words, any case), targets, and flags.
The text is scanned once for every level's words, leftmost and longest first, so a phrase hides the
words inside it ("nicht kritisch" is not "kritisch"); of the levels found, the one the scheme lists
first (the most severe) wins: "Fehlerklasse 1 … nicht kritisch" is level 1. No word: the default.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class TargetKind(enum.StrEnum):
    BUSINESS_HOURS = "business_hours"
    BUSINESS_DAYS = "business_days"
    CALENDAR_HOURS = "calendar_hours"


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    amount: float

    def __post_init__(self) -> None:
        if self.amount < 0:
            raise ValueError("a target must not be negative")
        if self.kind == TargetKind.BUSINESS_DAYS and self.amount != int(self.amount):
            raise ValueError("business days are whole days")

    def describe(self, language: str = "en") -> str:
        n = f"{self.amount:g}"
        words = {
            "en": {"business_hours": "business hours", "business_days": "business days", "calendar_hours": "hours"},
            "de": {"business_hours": "Geschäftsstunden", "business_days": "Geschäftstage", "calendar_hours": "Stunden"},
        }
        return f"{n} {words.get(language, words['en'])[self.kind.value]}"


class Recipients(enum.StrEnum):
    """Who a stage of the escalation ladder goes to."""

    ASSIGNEE = "assignee"  # the case's assignee, else the queue's agents (notify)
    AGENTS = "agents"  # the queue's notify addresses
    ESCALATION = "escalation"  # the queue's escalation recipients (managers)


@dataclass(frozen=True)
class Stage:
    """One rung of the escalation ladder: at ``at`` percent of a clock's business time, tell
    ``to``. 100 is the breach (the deadline itself). Stages not ``urgent`` are held back while the
    recipients' calendar is closed and sent at its next opening."""

    at: float
    to: Recipients | str  # a Recipients value or an e-mail address
    urgent: bool = False

    @property
    def is_breach(self) -> bool:
        return self.at >= 100

    @property
    def name(self) -> str:
        return "breach" if self.at == 100 else f"{self.at:g}%"


# Without a ladder in the config: a warning to the case's agent at 75 %, the breach to the managers.
DEFAULT_STAGES = (
    Stage(75, Recipients.ASSIGNEE),
    Stage(100, Recipients.ESCALATION, urgent=True),
)


@dataclass(frozen=True)
class SeverityLevel:
    key: str  # "1", "A", "critical": what #severity takes and tickets store
    label_de: str
    label_en: str
    words: tuple[str, ...] = ()
    first_response: Target | None = None
    resolution: Target | None = None
    # While open, a follow-up is due this often (seed 002: level 1 is "followed up daily").
    follow_up: Target | None = None
    # Escalate to the queue's escalation recipients as soon as the case exists (seed 001: class A).
    escalate_on_create: bool = False
    # The escalation ladder of every clock of this level (sorted by ``at``).
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    # After a breach the managers are told again this often while the clock runs (default: the
    # follow-up cadence; None and no follow_up: once).
    reescalate_every: Target | None = None

    @property
    def repeat(self) -> Target | None:
        return self.reescalate_every or self.follow_up

    def label(self, language: str) -> str:
        return self.label_de if language == "de" else self.label_en


@dataclass(frozen=True)
class SeverityScheme:
    levels: tuple[SeverityLevel, ...]
    default: str
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, hash=False, repr=False)
    _word_level: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        keys = [lv.key for lv in self.levels]
        if not keys:
            raise ValueError("a severity scheme needs at least one level")
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate severity level in {keys}")
        if self.default not in keys:
            raise ValueError(f"default level {self.default!r} is not one of {keys}")
        word_level: dict[str, str] = {}
        for lv in self.levels:
            for w in lv.words:
                if w.strip():
                    word_level.setdefault(" ".join(w.split()).casefold(), lv.key)
        object.__setattr__(self, "_word_level", word_level)
        if word_level:
            words = sorted(word_level, key=len, reverse=True)
            # Whole words ("P1" is not "P10"); any run of white space between the words of a phrase.
            alternatives = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in words)
            rx = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
            object.__setattr__(self, "_pattern", rx)

    def level(self, key: str) -> SeverityLevel:
        return next(lv for lv in self.levels if lv.key == key)

    def detect(self, subject: str, text: str) -> tuple[SeverityLevel, str | None]:
        """The level a customer's mail asks for, and the words that said so (None: the default)."""
        if self._pattern is None:
            return self.level(self.default), None
        order = {lv.key: i for i, lv in enumerate(self.levels)}
        best: tuple[int, str] | None = None
        # Casefolded on both sides: "ÄUSSERST KRITISCH" is "Äußerst kritisch".
        for m in self._pattern.finditer(f"{subject}\n{text}".casefold()):
            key = self._word_level[" ".join(m.group(0).split())]
            if best is None or order[key] < best[0]:
                best = (order[key], m.group(0))
        if best is None:
            return self.level(self.default), None
        return self.levels[best[0]], best[1]

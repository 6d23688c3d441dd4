"""Agent commands at the top of an agent's reply: recognising, validating and cutting them out.

Owns the command syntax only; what a command does to a case is decided by
:class:`mailbridge.ingest.conversation.AgentCommands` (all or nothing) and :mod:`mailbridge.lifecycle`.
No I/O.

**Where commands are.** Only in the leading block of the mail's new text: leading blank lines are
skipped, then every line that starts with ``#`` directly followed by a letter (after optional
whitespace) is a command attempt; blank lines between commands are allowed; the first other line ends
the block, and everything from there on is text. ``#`` followed by anything else (a blank, a digit,
another ``#``: ``# Heading``, ``#1 priority for us is …``) is text and also ends the block. Command
lines further down are text too. Decorated lines such as ``*#solve*`` or ``> #solve`` are text as
well: strict rules mean a case never changes on a guess.

**Commands** (names are case-insensitive; German aliases and their ASCII spellings are accepted):

=============  ===============================================  =========================================
command        aliases                                          argument
=============  ===============================================  =========================================
``#severity``  ``#schwere``, ``#prio``, ``#priority``           a configured severity level
``#assign``    ``#zuweisen``                                    an agent's address
``#open``      ``#offen``                                       none
``#pending``   ``#wartend``                                     none
``#solve``     ``#gelöst``, ``#geloest``, ``#solved``           none
``#close``     ``#schließen``, ``#schliessen``, ``#closed``     none
``#note``      ``#notiz``                                       none (the whole mail is an internal note)
``#new``       ``#neu``                                         the customer's address (opens a case)
``#received``  ``#eingang``, ``#empfangen``                     when the customer called: ``2027-01-05
                                                                09:12`` (ISO 8601; the queue calendar's
                                                                zone unless it names one)
``#help``      ``#hilfe``                                       none (the cheat sheet comes back by mail)
=============  ===============================================  =========================================

**A mail about a case, or one that opens a case.** A reply about a case (``new_case=False``) takes the
commands of the first part of the table; ``#new``, ``#received`` and ``#help`` there are errors. A
mail to the support address without a case (``new_case=True``, an agent taking a call) takes
``#new`` with ``#severity``, ``#assign`` and ``#received``, or ``#help`` alone; any other command
there is an error (it needs a case). A ``#received`` time in the future is an error.

**Errors** (one message per offending line, naming it): an unknown command (with a suggestion), a
missing, superfluous or invalid argument, two status commands that contradict each other
(``#pending`` and ``#solve``), two different severities or assignees. Repeating the same command
with the same argument is harmless and kept once. The parser returns the valid commands *and* the
errors; rejecting the whole block when there is any error is the caller's policy.

**Reasons in the agents' language.** Each error is a :class:`Reason`: a string (its English text, as
stored in events and logs) that knows its kind and values, so the error mail to an agent says it in
the mail's own language (:meth:`Reason.say`). The catalogue of these texts is
:data:`mailbridge.outbound.messages.REASONS` (outbound, so the error mail can use it).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from mailbridge.outbound.messages import Reason

# Canonical command names and the kind of argument each takes.
_ARG_SEVERITY = "severity level"
_ARG_AGENT = "agent address"
_ARG_CUSTOMER = "customer address"
_ARG_TIME = "time"
COMMANDS: dict[str, str | None] = {
    "assign": _ARG_AGENT,
    "close": None,
    "note": None,
    "open": None,
    "pending": None,
    "severity": _ARG_SEVERITY,
    "solve": None,
    "new": _ARG_CUSTOMER,
    "received": _ARG_TIME,
    "help": None,
}
# Alias → canonical name. Names are matched after NFC normalisation and casefolding (casefold maps
# "ß" to "ss", so "#schließen", "#SCHLIESSEN" and "#schliessen" meet).
ALIASES: dict[str, str] = {
    "schwere": "severity",
    "prio": "severity",
    "priority": "severity",
    "zuweisen": "assign",
    "offen": "open",
    "wartend": "pending",
    "gelöst": "solve",
    "geloest": "solve",
    "solved": "solve",
    "schließen": "close",
    "schliessen": "close",
    "closed": "close",
    "notiz": "note",
    "neu": "new",
    "eingang": "received",
    "empfangen": "received",
    "hilfe": "help",
}
# The commands of a mail without a case (they open one, or ask for the cheat sheet).
NEW_CASE_COMMANDS = frozenset({"new", "received", "help"})
# What may go with #new: the new case's severity, assignee and the time of the call.
WITH_NEW = frozenset({"new", "received", "severity", "assign"})
# The commands that set the ticket status; at most one of them per mail.
STATUS_COMMANDS = frozenset({"open", "pending", "solve", "close"})
# A mail with more command lines than this is not a list of commands; the rest are not examined.
MAX_COMMAND_LINES = 50
# Offending lines are quoted in error messages up to this length.
_QUOTE_MAX = 80
# A command line: "#", a letter, then the rest of the name up to the first blank, then the argument.
_COMMAND_RE = re.compile(r"#(?P<name>[^\W\d_]\S*)(?:\s+(?P<arg>.*))?", re.DOTALL)
# An addr-spec good enough to hand to is_agent(); "<…>" and "mailto:" around it are tolerated.
_ADDRESS_RE = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+")
_MAILTO_LINK_RE = re.compile(r"\[([^\]]*)\]\(mailto:([^)]*)\)", re.IGNORECASE)

_LOOKUP: dict[str, str] = {**{name: name for name in COMMANDS}, **{k.casefold(): v for k, v in ALIASES.items()}}
_KNOWN = ", ".join(f"#{name}" for name in sorted(COMMANDS))


@dataclass(frozen=True)
class Command:
    """One valid command: its canonical name, its normalised argument, and the line as written."""

    name: str
    arg: str | None
    line: str


@dataclass(frozen=True)
class CommandBlock:
    """The result of :func:`parse_commands`.

    ``text`` is the mail text without the command block (what may be relayed); ``errors`` are
    :class:`Reason` texts (English as strings, :meth:`Reason.say` for another language), each
    naming the offending line.
    """

    commands: list[Command]
    errors: list[Reason]
    text: str


def _short(text: str, limit: int = _QUOTE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_command_line(stripped: str) -> bool:
    # "#" directly followed by a letter (any script: "#gelöst"); "# x", "#1", "##" are text.
    return len(stripped) > 1 and stripped[0] == "#" and stripped[1].isalpha()


def _address(arg: str) -> str | None:
    """The address in an #assign argument, lower-cased, or None."""
    arg = arg.strip()
    link = _MAILTO_LINK_RE.fullmatch(arg)  # HTML mail converted to text: [addr](mailto:addr)
    if link:
        arg = link.group(2)
    if arg.startswith("<") and arg.endswith(">"):
        arg = arg[1:-1].strip()
    if arg.lower().startswith("mailto:"):
        arg = arg[len("mailto:") :]
    return arg.lower() if _ADDRESS_RE.fullmatch(arg) else None


def _unknown(name: str, line: str) -> Reason:
    close = difflib.get_close_matches(name.casefold(), list(_LOOKUP), n=1, cutoff=0.75)
    values = {"line": _short(line), "name": _short(name, 30), "known": _KNOWN}
    if close:
        return Reason("unknown_command_suggest", suggestion=_LOOKUP[close[0]], **values)
    return Reason("unknown_command", **values)


def _received(line: str, arg: str, zone: tzinfo, now: datetime | None) -> tuple[Command | None, Reason | None]:
    """``#received 2027-01-05 09:12``: ISO 8601 (``datetime.fromisoformat``), in ``zone`` unless it
    names its own; never after ``now``. The argument becomes the time in UTC, ISO 8601."""
    try:
        at = datetime.fromisoformat(arg)
    except ValueError:
        return None, Reason("bad_time", line=_short(line), arg=repr(_short(arg, 40)))
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    if now is not None and at > now:
        return None, Reason("time_in_future", line=_short(line))
    return Command("received", at.astimezone(UTC).isoformat(), line), None


def _parse_line(
    line: str,
    severity_levels: Sequence[str],
    is_agent: Callable[[str], bool],
    zone: tzinfo = UTC,
    now: datetime | None = None,
) -> tuple[Command | None, Reason | None]:
    m = _COMMAND_RE.fullmatch(line)
    if m is None:  # cannot happen for a command line; kept so a change to the rules fails safe
        return None, Reason("not_a_command", line=_short(line))
    written = m.group("name")
    name = _LOOKUP.get(unicodedata.normalize("NFC", written).casefold())
    arg = (m.group("arg") or "").strip() or None
    if name is None:
        return None, _unknown(written, line)
    kind = COMMANDS[name]
    if kind is None:
        if arg is not None:
            return None, Reason("takes_no_argument", line=_short(line), name=name)
        return Command(name, None, line), None
    if arg is None:
        need = {_ARG_SEVERITY: "needs_severity", _ARG_AGENT: "needs_agent", _ARG_CUSTOMER: "needs_customer"}
        return None, Reason(need.get(kind, "needs_time"), line=_short(line), name=name)
    if kind == _ARG_TIME:
        return _received(line, arg, zone, now)
    if kind == _ARG_SEVERITY:
        levels = {str(level).casefold(): str(level) for level in severity_levels}
        level = levels.get(arg.casefold())
        if level is None:
            known = ", ".join(str(level) for level in severity_levels)
            return None, Reason("unknown_severity", line=_short(line), arg=repr(_short(arg, 30)), known=known)
        return Command(name, level, line), None
    address = _address(arg)
    if address is None:
        return None, Reason("not_an_address", line=_short(line), name=name, arg=repr(_short(arg, 60)))
    if kind == _ARG_CUSTOMER:
        if is_agent(address):
            return None, Reason("new_for_agent", line=_short(line), address=_short(address, 60))
        return Command(name, address, line), None
    if not is_agent(address):
        return None, Reason("not_an_agent", line=_short(line), address=_short(address, 60))
    return Command(name, address, line), None


def _misplaced(commands: list[Command], new_case: bool) -> list[Reason]:
    """The commands that do not belong in this mail: the new-case commands in a reply about a case;
    in a mail without a case, a command that needs one (no #new), or #help with anything else."""
    names = {c.name for c in commands}
    if not new_case:
        return [
            Reason("needs_no_case", line=_short(c.line), name=c.name) for c in commands if c.name in NEW_CASE_COMMANDS
        ]
    if "help" in names:
        return [Reason("help_alone", line=_short(c.line)) for c in commands if c.name != "help"]
    if "new" in names:
        return [Reason("not_with_new", line=_short(c.line), name=c.name) for c in commands if c.name not in WITH_NEW]
    return [Reason("needs_case", line=_short(c.line), name=c.name) for c in commands]


def _conflicts(commands: list[Command]) -> tuple[list[Command], list[Reason]]:
    """Drop exact repeats; report contradicting status commands, severities and assignees."""
    kept: list[Command] = []
    errors: list[Reason] = []
    seen: dict[str, Command] = {}  # slot → first command in it
    for c in commands:
        slot = "status" if c.name in STATUS_COMMANDS else c.name
        first = seen.get(slot)
        if first is None:
            seen[slot] = c
            kept.append(c)
        elif (first.name, first.arg) != (c.name, c.arg):
            errors.append(Reason(f"conflict_{slot}", line=_short(c.line), first=_short(first.line)))
    return kept, errors


def parse_commands(
    text: str,
    *,
    severity_levels: Sequence[str],
    is_agent: Callable[[str], bool],
    new_case: bool = False,
    zone: tzinfo = UTC,
    now: datetime | None = None,
) -> CommandBlock:
    """Find, validate and remove the command block at the top of an agent's mail text.

    Args:
        text: the new text of the mail (quoted history already removed); LF or CRLF line ends.
        severity_levels: the queue's levels; ``#severity`` matches them case-insensitively and
            returns the configured spelling.
        is_agent: whether an address (lower-cased) is an agent of the queue, for ``#assign`` (and
            ``#new``, whose customer must not be one).
        new_case: the mail belongs to no case (see "A mail about a case, or one that opens a case").
        zone: the zone of a ``#received`` time that names none (the queue calendar's).
        now: the mail's time; a ``#received`` time after it is an error.

    Returns:
        The valid commands in mail order, the error messages, and the text from the first line after
        the block on (line ends kept). Without any command line: no commands, no errors, ``text``
        unchanged.
    """
    lines = (text or "").splitlines(keepends=True)
    commands: list[Command] = []
    errors: list[Reason] = []
    seen_command = False
    count = 0
    end = len(lines)
    for i, raw in enumerate(lines):
        stripped = raw.strip()
        if i == 0:
            stripped = stripped.lstrip("\ufeff").strip()  # a byte order mark is not text
        if not stripped:
            continue  # blank lines before and between commands belong to the block
        if not _is_command_line(stripped):
            end = i
            break
        seen_command = True
        count += 1
        if count > MAX_COMMAND_LINES:
            errors.append(Reason("too_many_lines", limit=MAX_COMMAND_LINES))
            end = len(lines)
            break
        command, error = _parse_line(stripped, severity_levels, is_agent, zone, now)
        if command is not None:
            commands.append(command)
        if error is not None:
            errors.append(error)
    if not seen_command:
        return CommandBlock(commands=[], errors=[], text=text)
    commands, conflicts = _conflicts(commands)
    errors += conflicts + _misplaced(commands, new_case)
    return CommandBlock(commands=commands, errors=errors, text="".join(lines[end:]))

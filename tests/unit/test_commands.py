"""Agent commands: every command and alias, validation errors, the stop rule, text left to relay."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mailbridge.ingest.commands import MAX_COMMAND_LINES, Command, CommandBlock, parse_commands

LEVELS = ["1", "2", "3", "Critical"]
AGENTS = {"anna@vendor.example", "ben@vendor.example"}


def _parse(text: str) -> CommandBlock:
    return parse_commands(text, severity_levels=LEVELS, is_agent=lambda a: a in AGENTS)


def _names(block: CommandBlock) -> list[tuple[str, str | None]]:
    return [(c.name, c.arg) for c in block.commands]


@pytest.mark.parametrize("name", ["open", "pending", "solve", "close", "note"])
def test_commands_without_argument(name):
    """Each argument-less command is recognised and removed from the text."""
    block = _parse(f"#{name}\nDanke für Ihre Geduld.\n")
    assert _names(block) == [(name, None)]
    assert block.errors == []
    assert block.text == "Danke für Ihre Geduld.\n"


def test_severity_with_a_configured_level():
    """#severity takes a configured level."""
    block = _parse("#severity 2\nText")
    assert _names(block) == [("severity", "2")]
    assert block.errors == []


def test_severity_level_is_matched_case_insensitively_and_returned_canonical():
    """#severity critical gives the level as configured ("Critical")."""
    assert _names(_parse("#severity CRITICAL")) == [("severity", "Critical")]


def test_assign_to_an_agent():
    """#assign takes an agent's address, lower-cased."""
    block = _parse("#assign Anna@Vendor.Example\nText")
    assert _names(block) == [("assign", "anna@vendor.example")]
    assert block.errors == []


@pytest.mark.parametrize(
    "arg",
    ["<anna@vendor.example>", "mailto:anna@vendor.example", "[anna@vendor.example](mailto:anna@vendor.example)"],
)
def test_assign_tolerates_brackets_and_mailto(arg):
    """Angle brackets, mailto: and a converted HTML link around the address are accepted."""
    assert _names(_parse(f"#assign {arg}")) == [("assign", "anna@vendor.example")]


def test_command_line_is_kept_as_written():
    """Command.line holds the stripped line as the agent wrote it."""
    assert _parse("  #Solve  \n").commands == [Command("solve", None, "#Solve")]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("#SOLVE", ("solve", None)),
        ("#Pending", ("pending", None)),
        ("#schwere 1", ("severity", "1")),
        ("#prio 3", ("severity", "3")),
        ("#priority 3", ("severity", "3")),
        ("#wartend", ("pending", None)),
        ("#offen", ("open", None)),
        ("#gelöst", ("solve", None)),
        ("#GELÖST", ("solve", None)),
        ("#geloest", ("solve", None)),
        ("#gelo\u0308st", ("solve", None)),  # decomposed umlaut (macOS)
        ("#solved", ("solve", None)),
        ("#schließen", ("close", None)),
        ("#SCHLIESSEN", ("close", None)),
        ("#schliessen", ("close", None)),
        ("#closed", ("close", None)),
        ("#zuweisen ben@vendor.example", ("assign", "ben@vendor.example")),
        ("#notiz", ("note", None)),
        ("#Notiz", ("note", None)),
    ],
)
def test_aliases_and_case_insensitive_names(written, expected):
    """German aliases, ASCII spellings and any letter case map to the canonical command."""
    block = _parse(written)
    assert block.errors == []
    assert _names(block) == [expected]


def test_several_commands_with_blank_lines_between():
    """Blank lines between commands belong to the block; all commands are kept in order."""
    block = _parse("\n\n#severity 1\n\n#assign anna@vendor.example\n#pending\n\nHallo Herr Müller,\n\nText\n")
    assert _names(block) == [("severity", "1"), ("assign", "anna@vendor.example"), ("pending", None)]
    assert block.errors == []
    assert block.text == "Hallo Herr Müller,\n\nText\n"


def test_indented_commands_count():
    """Whitespace (also a no-break space) before the # is allowed."""
    assert _names(_parse("   #solve\n\t#note\n\u00a0#severity 1")) == [
        ("solve", None),
        ("note", None),
        ("severity", "1"),
    ]


def test_unknown_command_names_the_line_and_suggests():
    """A misspelt command is an error naming the line, the near miss and the known commands."""
    block = _parse("#severty 1\nText")
    assert block.commands == []
    assert block.errors == [
        'line "#severty 1": unknown command #severty, did you mean #severity? '
        "(known: #assign, #close, #help, #new, #note, #open, #pending, #received, #severity, #solve)"
    ]
    assert block.text == "Text"


def test_unknown_command_without_near_miss():
    """A hashtag far from every command gets no suggestion."""
    block = _parse("#xyzzy")
    assert block.errors == [
        'line "#xyzzy": unknown command #xyzzy '
        "(known: #assign, #close, #help, #new, #note, #open, #pending, #received, #severity, #solve)"
    ]


def test_unknown_severity_is_an_error():
    """A level that is not configured is rejected with the known levels."""
    block = _parse("#severity 9")
    assert block.commands == []
    assert block.errors == ["line \"#severity 9\": unknown severity '9' (known: 1, 2, 3, Critical)"]


def test_severity_without_level_is_an_error():
    """#severity alone lacks its argument."""
    assert _parse("#severity").errors == ['line "#severity": #severity needs an argument (severity level)']


def test_assign_to_a_non_agent_is_an_error():
    """#assign to an address that is not an agent of the queue is rejected."""
    block = _parse("#assign mallory@evil.example")
    assert block.commands == []
    assert block.errors == ['line "#assign mallory@evil.example": mallory@evil.example is not an agent of this queue']


@pytest.mark.parametrize("arg", ["anna", "anna@vendor.example ben@vendor.example", "Anna Schmidt"])
def test_assign_needs_one_address(arg):
    """#assign with something that is not a single address is rejected."""
    block = _parse(f"#assign {arg}")
    assert block.commands == []
    assert block.errors == [f'line "#assign {arg}": #assign needs one e-mail address, got {arg!r}']


def test_assign_without_address_is_an_error():
    """#assign alone lacks its argument."""
    assert _parse("#assign").errors == ['line "#assign": #assign needs an argument (agent address)']


@pytest.mark.parametrize("line", ["#solve now", "#note this is internal", "#pending bis Montag"])
def test_argument_to_an_argumentless_command_is_an_error(line):
    """Commands without arguments must have none."""
    block = _parse(line)
    assert block.commands == []
    assert len(block.errors) == 1
    assert block.errors[0].startswith(f'line "{line}": #')
    assert block.errors[0].endswith("takes no argument")


@pytest.mark.parametrize(("a", "b"), [("#pending", "#solve"), ("#open", "#close"), ("#wartend", "#gelöst")])
def test_contradicting_status_commands_are_an_error(a, b):
    """Two different status commands in one mail contradict each other."""
    block = _parse(f"{a}\n{b}\nText")
    assert block.errors == [f'line "{b}": contradicts line "{a}" (two different status commands in one mail)']


def test_two_different_severities_are_an_error():
    """#severity 1 and #severity 2 in one mail contradict each other."""
    assert _parse("#severity 1\n#severity 2").errors == [
        'line "#severity 2": contradicts line "#severity 1" (two different severities in one mail)'
    ]


def test_two_different_assignees_are_an_error():
    """Assigning to two agents in one mail is a contradiction."""
    assert len(_parse("#assign anna@vendor.example\n#assign ben@vendor.example").errors) == 1


def test_repeated_identical_command_is_kept_once():
    """#solve twice (or #solve and #gelöst) is the same wish: one command, no error."""
    block = _parse("#solve\n#gelöst\n#severity 1\n#prio 1")
    assert _names(block) == [("solve", None), ("severity", "1")]
    assert block.errors == []


def test_note_combines_with_a_status_command():
    """An internal note may also change the status."""
    assert _names(_parse("#note\n#pending\nRückfrage beim Hersteller läuft.")) == [("note", None), ("pending", None)]


def test_errors_and_valid_commands_are_both_reported():
    """The valid commands are returned next to the errors; the caller decides (all or nothing)."""
    block = _parse("#solve\n#severty 1")
    assert _names(block) == [("solve", None)]
    assert len(block.errors) == 1


@pytest.mark.parametrize(
    "first",
    ["# Überschrift", "#1 priority for us is uptime", "## Heading", "#", "#-solve", "*#solve*", "> #solve", "Hallo"],
)
def test_lines_that_are_not_command_attempts_end_the_block(first):
    """# followed by a blank, digit, # or nothing — and decorated lines — are text, not commands."""
    text = f"{first}\n#solve\n"
    block = _parse(text)
    assert block.commands == []
    assert block.errors == []
    assert block.text == text


def test_commands_after_text_are_ignored_and_stay_in_the_text():
    """Only the leading block counts; a #solve further down is left in the relayed text."""
    text = "#pending\nHallo,\n\n#solve\nGruß\n"
    block = _parse(text)
    assert _names(block) == [("pending", None)]
    assert block.text == "Hallo,\n\n#solve\nGruß\n"


def test_hashtag_line_after_commands_ends_the_block():
    """A non-command # line after commands ends the block and stays in the text."""
    block = _parse("#solve\n#1 thing first\nmore")
    assert _names(block) == [("solve", None)]
    assert block.text == "#1 thing first\nmore"


def test_crlf_text_keeps_its_line_ends():
    """CRLF mail text is parsed the same way and the rest keeps its CRLF line ends."""
    block = _parse("\r\n#severity 1\r\n\r\n#solve\r\nGuten Tag,\r\nerledigt.\r\n")
    assert _names(block) == [("severity", "1"), ("solve", None)]
    assert block.text == "Guten Tag,\r\nerledigt.\r\n"


def test_byte_order_mark_before_the_first_command():
    """A byte order mark at the very start does not hide the first command."""
    assert _names(_parse("\ufeff#solve\nText")) == [("solve", None)]


@pytest.mark.parametrize("text", ["", "\n\n", "Hallo,\n#solve\n", "   \r\n  \r\nText"])
def test_no_command_block_leaves_text_unchanged(text):
    """Without a leading command line: no commands, no errors, the text exactly as it was."""
    assert _parse(text) == CommandBlock(commands=[], errors=[], text=text)


def test_only_commands_leave_empty_text():
    """A mail that is nothing but commands leaves nothing to relay."""
    block = _parse("#solve\n\n")
    assert _names(block) == [("solve", None)]
    assert block.text == ""


def test_long_offending_line_is_shortened_in_the_error():
    """An error quotes at most 80 characters of the offending line (and 30 of the command name)."""
    error = _parse("#" + "x" * 500).errors[0]
    assert "x" * 80 not in error
    assert error.startswith('line "#' + "x" * 78 + '…": unknown command #' + "x" * 29 + "… (known:")


def test_too_many_command_lines_are_cut_off():
    """A flood of # lines yields a bounded number of errors and one saying the rest was not read."""
    block = _parse("#bogus\n" * 10_000)
    assert len(block.errors) == MAX_COMMAND_LINES + 1
    assert block.errors[-1].startswith(f"more than {MAX_COMMAND_LINES} command lines")


# -- a mail about no case: #new, #received, #help ---------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # 11:00 in Berlin


def _new(text: str) -> CommandBlock:
    return parse_commands(
        text, severity_levels=LEVELS, is_agent=lambda a: a in AGENTS, new_case=True, zone=BERLIN, now=NOW
    )


def test_new_with_severity_and_received_in_the_calendar_zone():
    block = _new("#new Kunde@Firma.example\n#severity 1\n#received 2027-01-05 09:12\n\nDer Kunde rief an.")
    assert block.errors == []
    assert _names(block) == [
        ("new", "kunde@firma.example"),
        ("severity", "1"),
        ("received", "2027-01-05T08:12:00+00:00"),  # 09:12 in Berlin
    ]
    assert block.text == "Der Kunde rief an."


def test_received_with_its_own_zone_and_german_alias():
    block = _new("#neu kunde@firma.example\n#eingang 2027-01-05T09:12+00:00")
    assert _names(block)[1] == ("received", "2027-01-05T09:12:00+00:00")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("#received gestern früh", "is not a time"),
        ("#received 2027-01-05 11:30", "the time is in the future"),  # 11:30 Berlin is after 11:00
        ("#received", "needs an argument (a time"),
    ],
)
def test_bad_received_time(line, reason):
    block = _new(f"#new kunde@firma.example\n{line}")
    assert len(block.errors) == 1 and reason in block.errors[0]


def test_new_needs_a_customer_not_an_agent():
    assert "needs an argument (the customer" in _new("#new").errors[0]
    assert "is an agent of this queue, not a customer" in _new("#new anna@vendor.example").errors[0]
    assert "needs one e-mail address" in _new("#new Herr Müller").errors[0]


def test_commands_that_need_a_case():
    block = _new("#solve\n#severity 2")
    assert [e.kind for e in block.errors] == ["needs_case", "needs_case"]
    assert "reply to the notification" in block.errors[0]


def test_status_does_not_go_with_new():
    block = _new("#new kunde@firma.example\n#solve")
    assert [e.kind for e in block.errors] == ["not_with_new"]


def test_help_alone():
    assert _names(_new("#help")) == [("help", None)] and _new("#hilfe").errors == []
    assert [e.kind for e in _new("#help\n#new kunde@firma.example").errors] == ["help_alone"]


def test_new_case_commands_are_errors_about_a_case():
    block = _parse("#new kunde@firma.example\n#help")
    assert [e.kind for e in block.errors] == ["needs_no_case", "needs_no_case"]


def test_two_customers_contradict():
    block = _new("#new a@firma.example\n#new b@firma.example")
    assert [e.kind for e in block.errors] == ["conflict_new"]

"""DKIM passes from our own Authentication-Results headers (RFC 8601): trust rules and real formats."""

from __future__ import annotations

import pytest

from mailbridge.ingest.authres import MAX_HEADER_CHARS, dkim_pass_domains

OURS = "mx.vendor.example"

# As Postfix + OpenDKIM write it (folded, with the key size comment and a dkim-atps result).
OPENDKIM = (
    "mx.vendor.example;\r\n\tdkim=pass (2048-bit key; unprotected) header.d=vendor.example "
    'header.i=@vendor.example header.a=rsa-sha256 header.s=mail header.b="AbCd1234";\r\n\tdkim-atps=neutral'
)
# As Rspamd writes it.
RSPAMD = (
    "mx.vendor.example;\n\tdkim=pass header.d=vendor.example header.s=dkim header.b=abc;\n\t"
    "spf=pass (mx.vendor.example: domain of anna@vendor.example designates 192.0.2.1 as permitted sender) "
    "smtp.mailfrom=anna@vendor.example;\n\tdmarc=pass (policy=none) header.from=vendor.example"
)
# As Exchange Online writes it: no authserv-id at all, so not RFC 8601 syntax.
MICROSOFT = (
    "spf=pass (sender IP is 192.0.2.7) smtp.mailfrom=vendor.example; dkim=pass (signature was verified) "
    "header.d=vendor.example;dmarc=pass action=none header.from=vendor.example;compauth=pass reason=100"
)
# As Gmail writes it: header.i only, no header.d.
GMAIL_STYLE = (
    "mx.vendor.example;       dkim=pass header.i=@vendor.example header.s=20230601 header.b=XyZ;       "
    "spf=pass (mx.vendor.example: domain of anna@vendor.example designates 192.0.2.1 as permitted sender) "
    "smtp.mailfrom=anna@vendor.example"
)


def test_pass_is_reported():
    """dkim=pass in our header gives the signing domain."""
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.d=vendor.example"], OURS) == {"vendor.example"}


def test_the_format_from_the_brief():
    """The common one-line format with key size comment, header.i and header.b, plus spf."""
    value = (
        "mx.vendor.example; dkim=pass (2048-bit key) header.d=vendor.example header.i=@vendor.example "
        "header.b=abc; spf=pass smtp.mailfrom=anna@vendor.example"
    )
    assert dkim_pass_domains([value], OURS) == {"vendor.example"}


@pytest.mark.parametrize("value", [OPENDKIM, RSPAMD, GMAIL_STYLE], ids=["opendkim", "rspamd", "header-i-only"])
def test_real_server_formats(value):
    """Folded OpenDKIM and Rspamd headers and a header.i-only result all give vendor.example."""
    assert dkim_pass_domains([value], OURS) == {"vendor.example"}


@pytest.mark.parametrize("result", ["fail", "none", "neutral", "policy", "temperror", "permerror"])
def test_anything_but_pass_is_ignored(result):
    """Only dkim=pass counts."""
    assert dkim_pass_domains([f"{OURS}; dkim={result} header.d=vendor.example"], OURS) == set()


def test_other_methods_passing_do_not_count():
    """spf=pass, dmarc=pass and dkim-atps=pass are not DKIM signatures."""
    value = f"{OURS}; spf=pass smtp.mailfrom=vendor.example; dmarc=pass header.from=vendor.example; dkim-atps=pass"
    assert dkim_pass_domains([value], OURS) == set()


def test_multiple_results_in_one_header():
    """Every passing signature counts; a failing one next to them does not."""
    value = (
        f"{OURS}; dkim=pass header.d=vendor.example header.s=a; dkim=pass header.d=ESP.example header.s=b; "
        "dkim=fail header.d=other.example"
    )
    assert dkim_pass_domains([value], OURS) == {"vendor.example", "esp.example"}


def test_domain_is_lower_cased_and_header_i_local_part_dropped():
    """header.d is lower-cased; header.i's local part is dropped; a trailing dot is removed."""
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.d=Vendor.Example."], OURS) == {"vendor.example"}
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.i=anna@Sub.Vendor.example"], OURS) == {"sub.vendor.example"}


def test_header_d_wins_over_header_i():
    """With both present the signing domain d is reported, not i's subdomain."""
    value = f"{OURS}; dkim=pass header.d=vendor.example header.i=@mail.vendor.example"
    assert dkim_pass_domains([value], OURS) == {"vendor.example"}


def test_pass_without_any_domain_is_ignored():
    """A dkim=pass that names no domain proves nothing."""
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.s=sel"], OURS) == set()


def test_authserv_id_is_compared_case_insensitively():
    """MX.Vendor.Example and mx.vendor.example are the same authserv-id."""
    assert dkim_pass_domains(["MX.Vendor.Example; dkim=pass header.d=vendor.example"], " mx.vendor.EXAMPLE ") == {
        "vendor.example"
    }


def test_version_after_authserv_id_is_accepted():
    """RFC 8601 2.2 allows a version number after the authserv-id."""
    assert dkim_pass_domains([f"{OURS} 1; dkim=pass header.d=vendor.example"], OURS) == {"vendor.example"}


def test_trailing_semicolon_is_tolerated():
    """A header ending in ";" is still read."""
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.d=vendor.example;"], OURS) == {"vendor.example"}


def test_foreign_authserv_id_is_ignored():
    """A header a sender added with another id (forged or from their own server) counts for nothing."""
    assert dkim_pass_domains(["mx.attacker.example; dkim=pass header.d=vendor.example"], OURS) == set()


def test_ours_below_a_foreign_header_is_not_trusted():
    """A header with our id below a foreign one was written before our servers saw the mail."""
    values = [
        "mx.relay.example; dkim=none",
        f"{OURS}; dkim=pass header.d=vendor.example",
    ]
    assert dkim_pass_domains(values, OURS) == set()


def test_forged_header_below_the_foreign_hop_is_cut_off():
    """Ours at the top counts; a copy of ours further down, below a foreign header, does not."""
    values = [
        f"{OURS}; dkim=fail header.d=vendor.example",
        "mx.relay.example; spf=pass smtp.mailfrom=relay.example",
        f"{OURS}; dkim=pass header.d=vendor.example",
    ]
    assert dkim_pass_domains(values, OURS) == set()


def test_contiguous_run_of_ours_at_the_top_counts():
    """Several headers of ours at the top (one per filter) all count; below the first foreign one, none."""
    values = [
        f"{OURS}; spf=pass smtp.mailfrom=vendor.example",
        f"{OURS}; dkim=pass header.d=vendor.example",
        "mx.relay.example; dkim=pass header.d=relay.example",
        f"{OURS}; dkim=pass header.d=forged.example",
    ]
    assert dkim_pass_domains(values, OURS) == {"vendor.example"}


def test_microsoft_format_is_never_ours():
    """Exchange Online's header has no authserv-id: it is unparseable, foreign, and ends the run."""
    assert dkim_pass_domains([MICROSOFT], OURS) == set()
    assert dkim_pass_domains([MICROSOFT, f"{OURS}; dkim=pass header.d=vendor.example"], OURS) == set()


@pytest.mark.parametrize(
    "garbage",
    ["", "   ", "garbage((", ";;;", "dkim=pass", "\x00\x01", "ÄÖÜ; dkim=pass header.d=vendor.example"],
)
def test_garbage_at_the_top_ends_the_run_without_raising(garbage):
    """An unparseable header whose owner cannot be told ends the trusted run; nothing raises."""
    assert dkim_pass_domains([garbage, f"{OURS}; dkim=pass header.d=vendor.example"], OURS) == set()


def test_our_own_unparseable_header_is_skipped():
    """An unreadable header that starts with our authserv-id proves nothing but does not end the run."""
    values = [f"{OURS}; dkim=pass header.d=vendor.example (unclosed comment", f"{OURS}; dkim=pass header.d=b.example"]
    assert dkim_pass_domains(values, OURS) == {"b.example"}


def test_deeply_nested_comments_do_not_raise():
    """Thousands of "(" make the library recurse too deep; that is caught like a syntax error."""
    assert dkim_pass_domains(["(" * 5000 + OURS], OURS) == set()
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.d=vendor.example " + "(" * 5000], OURS) <= {"vendor.example"}


def test_over_long_header_is_not_parsed():
    """A header longer than the cap is not handed to the (quadratic) parser."""
    huge = f"{OURS}; " + "; ".join(["spf=pass smtp.mailfrom=a.example"] * (MAX_HEADER_CHARS // 20))
    assert len(huge) > MAX_HEADER_CHARS
    assert dkim_pass_domains([huge + "; dkim=pass header.d=vendor.example"], OURS) == set()


def test_no_headers_or_no_configured_id():
    """No headers, or no configured authserv-id, give nothing."""
    assert dkim_pass_domains([], OURS) == set()
    assert dkim_pass_domains([f"{OURS}; dkim=pass header.d=vendor.example"], "") == set()


def test_none_result_header_is_ours_and_harmless():
    """ "mx; none" is a valid header of ours with no results; the run continues below it."""
    values = [f"{OURS}; none", f"{OURS}; dkim=pass header.d=vendor.example"]
    assert dkim_pass_domains(values, OURS) == {"vendor.example"}

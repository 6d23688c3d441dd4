"""DKIM results our own receiving servers recorded in ``Authentication-Results`` (RFC 8601).

Owns the question "which domains did a trusted server see a valid DKIM signature for?"; parsing is
done by the ``authres`` library. No I/O.

**Which headers count.** Only those of our own ADMD, recognised by the configured authserv-id
(RFC 8601 2.5: it names the administrative domain, so every server of ours writes the same one), and
only the contiguous run of them at the *top* of the header block: trace headers are prepended
(RFC 5322 3.6.7), so ours sit above everything written before the mail reached us. A header carrying
our id below a foreign one was written before our servers saw the mail — by a sender forging it — and
is ignored, as RFC 8601 5 requires ("MUST ... not be trusted"). The rule cannot tell a forged header
directly beneath our own from a real one: the receiving server must delete or rename incoming headers
that carry our authserv-id, as RFC 8601 5 also requires (e.g. OpenDKIM ``RemoveARAll``, Rspamd and
Postfix header checks); without that, do not configure ``trusted_authserv_id``.

A header the library cannot parse is skipped when its leading token is our authserv-id (ours, but
unreadable: it proves nothing and hides nothing) and ends the run otherwise (we cannot tell whose it
is). Microsoft 365 writes its ``Authentication-Results`` without an authserv-id (``spf=pass (sender IP
is …) …; dkim=pass …``), which is not RFC 8601 syntax: such a header is never ours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres

# Longest header value we hand to the parser: real ones are a few hundred characters (Google's
# ~1 KB); the parser copies the remaining text per token, so its cost grows with the square of length.
MAX_HEADER_CHARS = 16_384
# RFC 5322 3.2.2: unfold by removing a CRLF that precedes whitespace.
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
# The leading token of a value the parser rejected: the authserv-id if the header is well-formed
# enough to have one (RFC 8601 2.2: authserv-id = value, in practice a dot-atom).
_LEADING_TOKEN_RE = re.compile(r"[ \t]*([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)", re.ASCII)


def _domain(result: authres.DKIMAuthenticationResult) -> str | None:
    """The signing domain of a DKIM result: ``header.d``, else the domain of ``header.i``."""
    d = str(result.header_d or "").strip()
    if not d:
        i = str(result.header_i or "").strip()
        d = i.rsplit("@", 1)[-1] if i else ""
    d = d.strip().rstrip(".").lower()
    if not d or any(ch.isspace() or ch in "@;\"'" for ch in d):
        return None
    return d


def dkim_pass_domains(header_values: Sequence[str], authserv_id: str) -> set[str]:
    """The lower-cased domains with ``dkim=pass`` in our own topmost Authentication-Results headers.

    Args:
        header_values: the values of every ``Authentication-Results`` field in the order they appear
            in the mail (top first), folded or not.
        authserv_id: our receiving servers' authserv-id (compared case-insensitively).

    Returns:
        ``header.d`` of every ``dkim=pass`` result (the ``header.i`` domain when there is no
        ``header.d``) in the contiguous run of our own headers at the top; empty when the topmost
        header is not ours. Never raises.
    """
    ours = (authserv_id or "").strip().lower()
    found: set[str] = set()
    if not ours:
        return found
    for value in header_values:
        # A trailing ";" (some servers write one) is not RFC 8601 syntax but changes nothing.
        text = _FOLD_RE.sub("", str(value)).strip().rstrip(";").rstrip()
        header = None
        if len(text) <= MAX_HEADER_CHARS:
            try:
                header = authres.parse_value(text)
            # AuthResError covers the library's SyntaxError (its own class, not the builtin) and
            # UnsupportedVersionError; deeply nested comments recurse once per "(".
            except (authres.AuthResError, RecursionError, ValueError):
                header = None
        if header is None:
            m = _LEADING_TOKEN_RE.match(text)
            if m and m.group(1).lower() == ours:
                continue  # ours, but unreadable: contributes nothing
            break
        if (header.authserv_id or "").lower() != ours:
            break  # the first foreign header ends what we can trust
        for result in header.results:
            if getattr(result, "method", None) == "dkim" and getattr(result, "result", None) == "pass":
                domain = _domain(result)
                if domain:
                    found.add(domain)
    return found

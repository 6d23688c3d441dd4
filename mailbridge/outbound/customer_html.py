"""The customer's HTML as agents see it in the notification's HTML alternative: sanitised with nh3
(the Rust ammonia sanitiser). No I/O.

The rule (ARCHITECTURE, "customer HTML shown to agents"): the usual formatting tags (paragraphs,
emphasis, lists, tables, quotes, headings, links); an image only with a ``cid:`` source naming an
inline part the notification carries, so a mail client never fetches anything from outside (no
tracking pixels, no remote or ``data:`` images); no scripts, styles, event handlers, forms, frames or
comments; links only to http, https and mailto, with ``rel="noopener noreferrer"``. An image that is
not shown keeps its alt text (the file itself is listed in the notification's frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import nh3
from markupsafe import Markup

TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd",
        "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
        "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
    }
)  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan", "align", "valign"},
    "th": {"colspan", "rowspan", "align", "valign"},
    "table": {"border", "cellpadding", "cellspacing"},
    "ol": {"start"},
    "font": {"color"},
    "p": {"align"},
    "div": {"align"},
    "blockquote": {"cite"},
}
# Removed with their content: code, and a full document's title (the rest of its head is never text).
CLEAN_CONTENT_TAGS = {"script", "style", "title", "template"}
# The largest customer HTML (characters) a notification shows; a larger one (a pasted log, a
# newsletter) is left to the text part and the raw mail. nh3 takes ~80 ms for this much.
MAX_SHOWN_CHARS = 500_000
# What a link may point to; "cid" only for images (the attribute filter below).
URL_SCHEMES = {"http", "https", "mailto", "cid"}


def content_id_of(url: str) -> str | None:
    """The Content-ID a ``cid:`` URL names (RFC 2392: URL-encoded, without angle brackets), else None."""
    if url[:4].lower() != "cid:":
        return None
    return unquote(url[4:]).strip().strip("<>").strip() or None


@dataclass(frozen=True)
class CleanHtml:
    """The sanitised HTML (Markup: an autoescaping template inserts it as it is) and the Content-IDs
    its ``cid:`` images refer to (shown or not)."""

    html: Markup
    referenced: frozenset[str]


def sanitise(html: str, shown: set[str] | frozenset[str]) -> CleanHtml:
    """``html`` with only what the rule above allows; an ``<img>`` keeps its ``cid:`` source only when
    the Content-ID is in ``shown`` (the inline parts the notification carries)."""
    referenced: set[str] = set()

    def attribute(tag: str, name: str, value: str) -> str | None:
        if name == "href" and content_id_of(value) is not None:
            return None  # a link to a part of the customer's mail leads nowhere in ours
        if tag != "img" or name != "src":
            return value
        cid = content_id_of(value)
        if cid is None:
            return None  # remote, relative or data: never loaded
        referenced.add(cid)
        return value if cid in shown else None

    clean = nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ATTRIBUTES,
        attribute_filter=attribute,
        url_schemes=URL_SCHEMES,
        url_relative="deny",
        strip_comments=True,
        link_rel="noopener noreferrer",
    )
    return CleanHtml(Markup(clean), frozenset(referenced))  # noqa: S704 - nh3's output is safe HTML

"""The case tracker's session cookie and pages over plain HTTP (no browser): HttpOnly, SameSite=Lax,
Secure when the public base URL is https; pages never cached, never framed, no scripts allowed."""

from __future__ import annotations

import urllib.request

import pytest

from tests.integration.tracker_support import TrackerDesk


@pytest.mark.parametrize("https", [False, True])
def test_session_cookie_flags_and_page_headers(tmp_path, imap_server, smtp_sink, db_url, imap_env, https):
    with TrackerDesk(tmp_path, imap_server, smtp_sink, db_url, https=https) as t:
        with urllib.request.urlopen(t.base + "signin", timeout=30) as r:  # noqa: S310 - loopback
            assert r.status == 200
            cookie = r.headers["Set-Cookie"]
            headers = r.headers
            body = r.read().decode()
        with urllib.request.urlopen(t.base + "healthz", timeout=30) as r:  # noqa: S310 - loopback
            assert r.status == 200
    assert cookie.startswith("mailbridge_session=")
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags
    assert ("secure" in flags) is https
    assert any(f.startswith("max-age=43200") for f in flags)  # [web] session_hours = 12
    assert headers["Cache-Control"] == "private, no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no scripts
    assert '<label for="address">' in body and 'name="csrf"' in body

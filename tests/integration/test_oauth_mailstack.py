"""OAuth2 for IMAP and SMTP (issue 12) against real servers: Dovecot's ``oauth2`` passdb checking tokens
of the local authorization server (tests/support/oauth_server.py) by RFC 7662 introspection, in the
private mail stack (tests/mailstack.py, ``MailStack(oauth2_introspection_url=…)``), and aiosmtpd with
AUTH XOAUTH2 (tests/support/oauth_smtp.py).

The first tests check the test bed itself with plain imapclient; the scenarios of the issue follow."""

from __future__ import annotations

import contextlib

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.mailstack import (  # noqa: F401  (fixtures)
    MailStack,
    mailstack_oauth_fixture,
    mailstack_oauth_session_fixture,
)
from tests.support.oauth_server import OAuthServer, oauth_server_fixture, oauth_server_session_fixture  # noqa: F401

pytestmark = pytest.mark.mailstack

MAILBOX = "support@vendor.example"
OTHER = "hotline-box@vendor.example"


@contextlib.contextmanager
def imap(stack: MailStack):
    client = IMAPClient(stack.host, port=stack.imap_port, ssl=False, timeout=30)
    try:
        yield client
    finally:
        # Dovecot's master waits for open client connections at its stop: close every one.
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()


def test_dovecot_takes_xoauth2_and_oauthbearer_tokens_and_passwords_still_work(
    mailstack_oauth: MailStack, oauth_server: OAuthServer
):
    mailstack_oauth.add_users(MAILBOX, OTHER)
    oauth_server.register_client("app-support", mailbox=MAILBOX)
    token = oauth_server.mint_access_token("app-support", None)
    with imap(mailstack_oauth) as c:
        assert {b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER", b"AUTH=PLAIN"} <= set(c.capabilities())
        c.oauth2_login(MAILBOX, token)
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
    with imap(mailstack_oauth) as c:
        c.oauthbearer_login(MAILBOX, token)
        c.select_folder("INBOX")
    with mailstack_oauth.imap(OTHER) as c:  # a password user, as before
        c.select_folder("INBOX")
    log = mailstack_oauth.dovecot_log()
    assert f"user=<{MAILBOX}>, method=XOAUTH2" in log and f"user=<{MAILBOX}>, method=OAUTHBEARER" in log
    assert f"user=<{OTHER}>, method=PLAIN" in log


@pytest.mark.parametrize("how", ["revoked", "expired", "another user's", "unknown", "a password"])
def test_dovecot_refuses_a_bad_token(mailstack_oauth: MailStack, oauth_server: OAuthServer, how: str):
    mailstack_oauth.add_users(MAILBOX, OTHER)
    oauth_server.register_client("app", mailbox=MAILBOX)
    if how == "revoked":
        token = oauth_server.mint_access_token("app", None)
        oauth_server.revoke_access_tokens()
    elif how == "expired":
        token = oauth_server.mint_access_token("app", None, lifetime=0)
    elif how == "another user's":
        token = oauth_server.mint_access_token("app", OTHER)
    elif how == "unknown":
        token = "at-never-issued"
    else:
        token = mailstack_oauth.password(MAILBOX)  # the oauth2 passdb does not take passwords as tokens
    with imap(mailstack_oauth) as c, pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        c.oauth2_login(MAILBOX, token)
    # and the good token of that moment still works
    with imap(mailstack_oauth) as c:
        c.oauth2_login(MAILBOX, oauth_server.mint_access_token("app", None))

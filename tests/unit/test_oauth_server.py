"""The local OAuth2 authorization server of the tests (tests/support/oauth_server.py) and the XOAUTH2 SMTP
server (tests/support/oauth_smtp.py), driven by the client libraries mailbridge uses: msal (Microsoft, over
TLS with the server's test CA), google-auth (service account with domain-wide delegation; a user's refresh
token), aiosmtplib (AUTH XOAUTH2 with a token generator) — and by plain HTTP where a protocol detail
(RFC 8628's slow_down, RFC 7662's client authentication) is the point."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import threading
import time

import aiosmtplib
import msal
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import credentials as google_credentials
from google.oauth2 import service_account
from joserfc import jwk

from tests.support.oauth_server import (  # noqa: F401  (fixtures)
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    OAuthServer,
    oauth_server_fixture,
    oauth_server_session_fixture,
)
from tests.support.oauth_smtp import OAuthSmtpSink

OUTLOOK = ["https://outlook.office365.com/.default"]
DELEGATED = ["https://outlook.office365.com/IMAP.AccessAsUser.All"]
MAILBOX = "support@vendor.example"
AGENT = "agent@vendor.example"
MAIL = b"From: support@vendor.example\r\nTo: kunde@kunde.example\r\nSubject: Ihr Fall\r\n\r\nHallo\r\n"


@pytest.fixture
def ca_bundle(oauth_server, monkeypatch):
    """msal talks through requests, which trusts the CA in REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_server.ca_file))
    return oauth_server.ca_file


def confidential(server: OAuthServer, client_id: str, secret, **kw) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=server.authority("contoso"), instance_discovery=False, **kw
    )


def post_token(server: OAuthServer, **form) -> requests.Response:
    return requests.post(server.token_url, data=form, timeout=10)


# -- msal ---------------------------------------------------------------------------------------------------


def test_msal_client_credentials_against_the_local_authority(oauth_server, ca_bundle):
    client = oauth_server.register_client("app-support", "s3cret-app", mailbox=MAILBOX)
    app = confidential(oauth_server, client.client_id, "s3cret-app")
    result = app.acquire_token_for_client(scopes=OUTLOOK)
    assert "access_token" in result, result
    info = oauth_server.introspect(result["access_token"])
    assert info["active"] and info["username"] == MAILBOX and info["scope"] == OUTLOOK[0]
    # msal's cache answers the second call: one token request in all
    assert app.acquire_token_for_client(scopes=OUTLOOK)["access_token"] == result["access_token"]
    assert oauth_server.token_requests("client_credentials") == 1


def test_msal_client_credentials_with_a_certificate(oauth_server, ca_bundle):
    """App-only with a certificate: msal signs a client_assertion (RS256, x5t = the SHA-1 thumbprint)
    that the server checks with the certificate's public key; a replayed or foreign one is refused."""
    pem, thumbprint = oauth_server.register_certificate_client("app-cert", mailbox=MAILBOX)
    credential = {"private_key": pem.decode(), "thumbprint": thumbprint}
    result = confidential(oauth_server, "app-cert", credential).acquire_token_for_client(scopes=OUTLOOK)
    assert oauth_server.introspect(result["access_token"])["username"] == MAILBOX
    other_pem, _ = OAuthServer().register_certificate_client("someone-else")
    forged = {"private_key": other_pem.decode(), "thumbprint": thumbprint}
    refused = confidential(oauth_server, "app-cert", forged).acquire_token_for_client(scopes=OUTLOOK)
    assert refused["error"] == "invalid_client"


def test_msal_instance_discovery_can_point_at_the_local_server(oauth_server, ca_bundle):
    oauth_server.register_client("app", "pw")
    app = msal.ConfidentialClientApplication(
        "app",
        client_credential="pw",
        authority=oauth_server.authority("contoso"),
        instance_discovery=oauth_server.instance_discovery_url,
    )
    assert "access_token" in app.acquire_token_for_client(scopes=OUTLOOK)


def test_msal_refuses_an_http_authority(oauth_server):
    with pytest.raises(ValueError, match="https"):
        msal.ConfidentialClientApplication("app", client_credential="pw", authority=f"{oauth_server.url}/contoso")


def test_msal_device_flow_refresh_rotation_and_revoked_consent(oauth_server, ca_bundle):
    oauth_server.register_client("desk", public=True)
    app = msal.PublicClientApplication("desk", authority=oauth_server.authority("contoso"), instance_discovery=False)
    flow = app.initiate_device_flow(scopes=DELEGATED)
    assert flow["user_code"] in flow["message"] and flow["verification_uri"] in flow["message"]
    approver = threading.Timer(1.5, oauth_server.approve, (flow["user_code"], AGENT))
    approver.start()
    result = app.acquire_token_by_device_flow(flow)
    approver.join()
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == AGENT
    # msal polled at least once before the approval
    assert oauth_server.token_requests(DEVICE_CODE_GRANT) >= 2
    [account] = app.get_accounts()
    assert account["username"] == AGENT

    first_refresh = result["refresh_token"]
    renewed = app.acquire_token_silent(DELEGATED, account=account, force_refresh=True)
    assert renewed and renewed["refresh_token"] != first_refresh
    assert first_refresh not in oauth_server.live_refresh_tokens()  # rotation: the old one is revoked
    reused = post_token(oauth_server, grant_type="refresh_token", refresh_token=first_refresh, client_id="desk")
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"

    oauth_server.revoke_consent(AGENT)
    failed = app.acquire_token_silent_with_error(DELEGATED, account=account, force_refresh=True)
    assert failed["error"] == "invalid_grant"
    assert failed["error_codes"] == [50173]
    assert failed["error_description"].startswith("AADSTS50173: ")
    assert not oauth_server.introspect(renewed["access_token"])["active"]


def test_msal_expired_client_secret_is_invalid_client(oauth_server, ca_bundle):
    oauth_server.register_client("app", "old-secret")
    oauth_server.expire_secret("app")
    result = confidential(oauth_server, "app", "old-secret").acquire_token_for_client(scopes=OUTLOOK)
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000222]
    assert "client secret keys for app 'app' are expired" in result["error_description"]


def test_msal_reads_the_503_of_a_failing_endpoint(oauth_server, ca_bundle):
    oauth_server.register_client("app", "pw")
    oauth_server.fail(503, times=1, retry_after=1)
    app = confidential(oauth_server, "app", "pw")
    # msal raises on a 5xx of the token endpoint (it returns an error dict only for 4xx answers) ...
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        app.acquire_token_for_client(scopes=OUTLOOK)
    # ... and replays that answer without asking again until Retry-After has passed
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        app.acquire_token_for_client(scopes=OUTLOOK)
    assert oauth_server.token_requests() == 1
    time.sleep(1.2)
    assert "access_token" in app.acquire_token_for_client(scopes=OUTLOOK)
    assert [r["status"] for r in oauth_server.requests] == [503, 200]


# -- google-auth --------------------------------------------------------------------------------------------


def test_google_service_account_with_domain_wide_delegation(oauth_server):
    info = oauth_server.register_service_account("mailbridge@desk-project.iam.gserviceaccount.com")
    creds = service_account.Credentials.from_service_account_info(info, scopes=["https://mail.google.com/"])
    delegated = creds.with_subject(MAILBOX)
    delegated.refresh(GoogleRequest())
    assert delegated.valid
    introspected = oauth_server.introspect(delegated.token)
    assert introspected["username"] == MAILBOX and introspected["scope"] == "https://mail.google.com/"
    assert oauth_server.token_requests(JWT_BEARER_GRANT) == 1

    # a key the server does not know: the RS256 signature check fails
    stranger = jwk.RSAKey.generate_key(2048).as_pem(private=True).decode()
    forged = service_account.Credentials.from_service_account_info(
        {**info, "private_key": stranger}, scopes=["https://mail.google.com/"]
    ).with_subject(MAILBOX)
    with pytest.raises(RefreshError, match="invalid_grant"):
        forged.refresh(GoogleRequest())


def test_google_user_refresh_token_rotates(oauth_server):
    oauth_server.register_client("installed-app", "gsecret")
    refresh = oauth_server.mint_refresh_token("installed-app", MAILBOX, "https://mail.google.com/")
    creds = google_credentials.Credentials(
        None,
        refresh_token=refresh,
        token_uri=oauth_server.token_url,
        client_id="installed-app",
        client_secret="gsecret",
    )
    creds.refresh(GoogleRequest())
    assert creds.valid and creds.refresh_token != refresh
    assert oauth_server.live_refresh_tokens(MAILBOX) == [creds.refresh_token]
    oauth_server.revoke_consent(MAILBOX)
    with pytest.raises(RefreshError, match="invalid_grant"):
        creds.refresh(GoogleRequest())


# -- the protocol itself ------------------------------------------------------------------------------------


def test_device_code_pending_slow_down_denied_and_expired(oauth_server):
    oauth_server.register_client("desk", public=True)
    oauth_server.device_interval = 1

    def start() -> dict:
        return requests.post(
            oauth_server.device_authorization_url, data={"client_id": "desk", "scope": "offline_access"}, timeout=10
        ).json()

    def poll(code: dict) -> dict:
        return post_token(oauth_server, grant_type=DEVICE_CODE_GRANT, device_code=code["device_code"], client_id="desk")

    code = start()
    assert code["interval"] == 1 and code["expires_in"] == 900
    assert poll(code).json()["error"] == "authorization_pending"
    assert poll(code).json()["error"] == "slow_down"  # polled again within the interval
    oauth_server.approve(code["user_code"], AGENT)
    granted = poll(code).json()
    assert granted["refresh_token"] and oauth_server.introspect(granted["access_token"])["username"] == AGENT
    assert poll(code).json()["error"] == "invalid_request"  # a device code is good once

    denied = start()
    oauth_server.deny(denied["user_code"])
    assert poll(denied).json()["error"] == "access_denied"

    oauth_server.device_code_lifetime = 0
    expired = start()
    time.sleep(0.05)
    assert poll(expired).json()["error"] == "expired_token"


def test_client_credentials_lifetime_and_introspection_needs_client_authentication(oauth_server):
    oauth_server.register_client("app", "pw", mailbox=MAILBOX)
    oauth_server.access_token_lifetime = 1
    token = requests.post(
        oauth_server.token_url, data={"grant_type": "client_credentials"}, auth=("app", "pw"), timeout=10
    ).json()
    assert token["expires_in"] == 1
    unauthenticated = requests.post(oauth_server.introspection_url, data={"token": token["access_token"]}, timeout=10)
    assert unauthenticated.status_code == 401
    auth = (oauth_server.introspection_client_id, oauth_server.introspection_client_secret)
    live = requests.post(oauth_server.introspection_url, data={"token": token["access_token"]}, auth=auth, timeout=10)
    assert live.json()["active"] is True and live.json()["username"] == MAILBOX
    time.sleep(1.1)
    dead = requests.post(oauth_server.introspection_url, data={"token": token["access_token"]}, auth=auth, timeout=10)
    assert dead.json() == {"active": False}
    wrong = requests.post(
        oauth_server.token_url, data={"grant_type": "client_credentials"}, auth=("app", "x"), timeout=10
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert oauth_server.token_requests("client_credentials") == 2


def test_revocation_endpoint(oauth_server):
    oauth_server.register_client("app", "pw")
    refresh = oauth_server.mint_refresh_token("app", AGENT)
    r = requests.post(oauth_server.url + "/revoke", data={"token": refresh}, auth=("app", "pw"), timeout=10)
    assert r.status_code == 200
    again = post_token(
        oauth_server, grant_type="refresh_token", refresh_token=refresh, client_id="app", client_secret="pw"
    )
    assert again.json()["error"] == "invalid_grant"


# -- SMTP AUTH XOAUTH2 / OAUTHBEARER ------------------------------------------------------------------------


@pytest.fixture
def oauth_smtp(oauth_server):
    sink = OAuthSmtpSink.for_server(oauth_server).start()
    yield sink
    sink.stop()


def test_aiosmtplib_xoauth2_with_a_token_generator(oauth_server, oauth_smtp):
    oauth_server.register_client("app", "pw", mailbox=MAILBOX)
    good = oauth_server.mint_access_token("app", None)

    async def send(token: str) -> None:
        async def generator() -> str:
            return token

        await aiosmtplib.send(
            MAIL,
            sender=MAILBOX,
            recipients=["kunde@kunde.example"],
            hostname="127.0.0.1",
            port=oauth_smtp.port,
            username=MAILBOX,
            oauth_token_generator=generator,
        )

    asyncio.run(send(good))
    [mail] = oauth_smtp.wait_for(1)
    assert mail.message["Subject"] == "Ihr Fall" and oauth_smtp.senders == [MAILBOX]

    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        asyncio.run(send("at-not-issued-here"))
    assert refused.value.code == 535
    other = oauth_server.mint_access_token("app", "someone-else@vendor.example")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        asyncio.run(send(other))  # a live token, but of another user
    assert [(x.mechanism, x.ok, x.why) for x in oauth_smtp.logins] == [
        ("XOAUTH2", True, ""),
        ("XOAUTH2", False, "inactive token"),
        ("XOAUTH2", False, "token of another user"),
    ]
    assert len(oauth_smtp.received) == 1


def test_smtp_oauthbearer_and_no_mail_without_auth(oauth_server, oauth_smtp):
    oauth_server.register_client("app", "pw", mailbox=MAILBOX)
    token = oauth_server.mint_access_token("app", None)
    with smtplib.SMTP("127.0.0.1", oauth_smtp.port, timeout=10) as c:
        c.ehlo()
        assert set(c.esmtp_features["auth"].split()) == {"XOAUTH2", "OAUTHBEARER"}
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail(MAILBOX, ["kunde@kunde.example"], MAIL)
        oauth_server.revoke_access_tokens()
        bad = base64.b64encode(f"n,a={MAILBOX},\x01auth=Bearer {token}\x01\x01".encode()).decode()
        code, challenge = c.docmd("AUTH", f"OAUTHBEARER {bad}")
        assert code == 334 and b"invalid_token" in base64.b64decode(challenge)
        assert c.docmd("AQ==")[0] == 535
    fresh = oauth_server.mint_access_token("app", None)
    with smtplib.SMTP("127.0.0.1", oauth_smtp.port, timeout=10) as c:
        c.ehlo()
        ir = base64.b64encode(f"n,a={MAILBOX},\x01auth=Bearer {fresh}\x01\x01".encode()).decode()
        assert c.docmd("AUTH", f"OAUTHBEARER {ir}")[0] == 235
        c.sendmail(MAILBOX, ["kunde@kunde.example"], MAIL)
    assert oauth_smtp.senders == [MAILBOX]

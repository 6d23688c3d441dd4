"""The token source against the local authorization server (tests/support/oauth_server.py), through
the real libraries: authlib (generic), msal (Microsoft, over TLS with the test CA), google-auth
(service account and refresh token); the token store on SQLite and PostgreSQL.

What a user relies on: a token is fetched once and reused until shortly before it expires; every
rotated refresh token is saved at once (a restart renews with it, the old one is dead on the server);
a refusal that needs a person is ``reauth_required`` with the provider's code and a hint; an endpoint
that is down is transient and a still-valid token is used meanwhile; two instances renewing at once
make one token request; tokens are encrypted at rest."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from mailbridge.oauth.faults import TokenError
from mailbridge.oauth.source import TokenSource
from mailbridge.settings import OAuth2Settings
from mailbridge.store import tokens as token_store
from mailbridge.store.db import make_engine, make_session_factory, session_scope
from mailbridge.store.tokens import TokenCipher, TokenKeyError
from tests.support.oauth_server import (  # noqa: F401 - pytest fixtures
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    oauth_server_fixture,
    oauth_server_session_fixture,
)

USER = "support@kessler-wzm.example"
KEY = Fernet.generate_key().decode()


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def factory(db_url):
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _settings(**values) -> OAuth2Settings:
    return OAuth2Settings.model_validate(values)


def _source(settings, factory, clock, name="support", key=KEY, owner=None) -> TokenSource:
    return TokenSource(name, settings, USER, factory, TokenCipher(key), clock, owner=owner)


def _generic_cc(server, secret):
    return _settings(
        provider="generic",
        flow="client_credentials",
        token_url=server.token_url,
        client_id="mailbridge",
        client_secret_env="X",
        client_secret=secret,
        scopes=["mail"],
    )


def _generic_rt(server, rt, **kw):
    return _settings(
        provider="generic",
        flow="refresh_token",
        token_url=server.token_url,
        client_id="mailbridge",
        client_secret_env="X",
        client_secret="pub-secret",
        refresh_token_env="Y",
        refresh_token=rt,
        **kw,
    )


def test_client_credentials_fetched_once_and_reused_until_renewal(oauth_server, factory):
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    clock = Clock()
    source = _source(_generic_cc(oauth_server, client.secret), factory, clock)
    first = source.token()
    assert oauth_server.introspect(first.value)["username"] == USER
    assert source.token().value == first.value
    assert oauth_server.token_requests("client_credentials") == 1
    # 5 minutes before expiry (refresh_margin 300 s) it is renewed, not at expiry.
    clock.advance(seconds=3600 - 301)
    assert source.token().value == first.value
    clock.advance(seconds=2)
    second = source.token()
    assert second.value != first.value and oauth_server.token_requests("client_credentials") == 2
    row = source.stored()
    assert row.renewals == 2 and row.renewed_at == clock.now and row.error_code is None


def test_rotated_refresh_token_is_saved_and_survives_a_restart(oauth_server, factory):
    oauth_server.register_client("mailbridge", "pub-secret")
    seed = oauth_server.mint_refresh_token("mailbridge", USER)
    clock = Clock()
    settings = _generic_rt(oauth_server, seed)
    _source(settings, factory, clock).token()
    live = oauth_server.live_refresh_tokens(USER)
    assert len(live) == 1 and live[0] != seed  # rotated: the seed is dead on the server
    with session_scope(factory) as s:
        assert token_store.read(s, "support", TokenCipher(KEY)).refresh_token == live[0]
    # A restart (a new source, another owner), an hour later: it renews with the stored token,
    # not with the dead seed from the config.
    clock.advance(hours=1)
    again = _source(settings, factory, clock, owner="after-restart").token()
    assert oauth_server.introspect(again.value)["username"] == USER
    assert oauth_server.token_requests("refresh_token") == 2
    assert all(r.get("error") is None for r in oauth_server.requests)


def test_revoked_consent_is_reauth_required_with_the_aadsts_code(oauth_server, factory):
    oauth_server.register_client("mailbridge", "pub-secret")
    seed = oauth_server.mint_refresh_token("mailbridge", USER)
    clock = Clock()
    source = _source(_generic_rt(oauth_server, seed), factory, clock)
    source.token()
    oauth_server.revoke_consent(USER, code=50173)
    clock.advance(hours=1)
    with pytest.raises(TokenError) as exc:
        source.token()
    e = exc.value
    assert e.permanent and e.code == "AADSTS50173"
    assert "password" in e.hint and "mailbridge auth login" in e.hint
    row = source.stored()
    assert row.reauth_required and row.error_code == "AADSTS50173" and row.failing_since == clock.now
    assert row.lease_owner is None  # the lease is given back


def test_expired_client_secret_is_reauth_required(oauth_server, factory):
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    oauth_server.expire_secret("mailbridge")
    source = _source(_generic_cc(oauth_server, client.secret), factory, Clock())
    with pytest.raises(TokenError) as exc:
        source.token()
    assert exc.value.permanent and exc.value.code == "AADSTS7000222"
    assert "client secret expired" in exc.value.hint
    assert source.stored().reauth_required


def test_a_refusal_that_needs_a_person_is_asked_again_only_slowly(oauth_server, factory):
    """The outbox sender asks for SMTP's token every few seconds: an expired secret must not be sent
    to the endpoint each time (Microsoft throttles such loops). permanent_retry (300 s) apart,
    unless forced (`auth test`, `auth login`: a person has just acted)."""
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    oauth_server.expire_secret("mailbridge")
    clock = Clock()
    source = _source(_generic_cc(oauth_server, client.secret), factory, clock)
    for _ in range(5):
        with pytest.raises(TokenError) as exc:
            source.token()
        assert exc.value.permanent and exc.value.code == "AADSTS7000222"
        clock.advance(seconds=30)
    assert oauth_server.token_requests("client_credentials") == 1
    clock.advance(seconds=300)
    with pytest.raises(TokenError):
        source.token()
    assert oauth_server.token_requests("client_credentials") == 2
    with pytest.raises(TokenError):
        source.token(force=True)
    assert oauth_server.token_requests("client_credentials") == 3


def test_endpoint_down_is_transient_and_a_valid_token_is_used_meanwhile(oauth_server, factory):
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    clock = Clock()
    source = _source(_generic_cc(oauth_server, client.secret), factory, clock)
    first = source.token()
    oauth_server.fail(503)
    clock.advance(seconds=3600 - 100)  # due for renewal, not expired
    assert source.token().value == first.value
    row = source.stored()
    assert not row.reauth_required and "503" in row.last_error and "retrying" in row.last_error
    clock.advance(seconds=200)  # expired now
    with pytest.raises(TokenError) as exc:
        source.token()
    assert not exc.value.permanent
    oauth_server.recover()
    assert source.token().value != first.value
    assert source.stored().last_error is None


def test_two_instances_renewing_at_once_make_one_token_request(oauth_server, factory):
    """Two instances (two sources with their own owner names, as two `App`s build them), four
    threads each, all finding the token due at the same moment: one token request."""
    oauth_server.register_client("mailbridge", "pub-secret")
    seed = oauth_server.mint_refresh_token("mailbridge", USER)
    clock = Clock()
    settings = _generic_rt(oauth_server, seed)
    sources = [_source(settings, factory, clock, owner=f"instance-{i}") for i in range(2)]
    sources[0].token()
    clock.advance(hours=1)
    before = oauth_server.token_requests("refresh_token")
    barrier = threading.Barrier(8)
    got, errors = [], []

    def work(source):
        barrier.wait()
        try:
            got.append(source.token().value)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(sources[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert oauth_server.token_requests("refresh_token") - before == 1
    assert len(set(got)) == 1 and len(got) == 8
    assert len(oauth_server.live_refresh_tokens(USER)) == 1


def test_tokens_are_encrypted_at_rest(oauth_server, factory):
    oauth_server.register_client("mailbridge", "pub-secret")
    seed = oauth_server.mint_refresh_token("mailbridge", USER)
    source = _source(_generic_rt(oauth_server, seed), factory, Clock())
    token = source.token()
    with session_scope(factory) as s:
        access, refresh = s.execute(text("SELECT access_token, refresh_token FROM oauth_tokens")).one()
    raw = bytes(access) + bytes(refresh)
    assert token.value.encode() not in raw and b"rt-" not in raw and raw.startswith(b"gAAAA")  # Fernet
    with session_scope(factory) as s, pytest.raises(TokenKeyError, match=r"does not decrypt with tokens\.key"):
        token_store.read(s, "support", TokenCipher(Fernet.generate_key().decode()))
    assert token.value not in repr(token) and token.value not in repr(source.stored())


def test_microsoft_app_only_through_msal(oauth_server, factory):
    """msal's ConfidentialClientApplication.acquire_token_for_client against a local authority:
    https with the test CA (ca_file → msal's verify), its OIDC metadata under /{tenant}/v2.0."""
    client = oauth_server.register_client("app-id", mailbox=USER)
    settings = _settings(
        provider="microsoft",
        flow="client_credentials",
        tenant="contoso.example",
        authority=oauth_server.authority("contoso.example"),
        client_id="app-id",
        client_secret_env="X",
        client_secret=client.secret,
        ca_file=str(oauth_server.ca_file),
    )
    source = _source(settings, factory, Clock())
    token = source.token()
    assert oauth_server.introspect(token.value)["username"] == USER
    assert oauth_server.introspect(token.value)["scope"] == "https://outlook.office365.com/.default"
    assert oauth_server.token_requests("client_credentials") == 1
    # msal's answer to an expired secret: AADSTS7000222 in error_codes.
    oauth_server.expire_secret("app-id")
    with session_scope(factory) as s:
        token_store.forget_access_token(s, "support", datetime.now(UTC))
    with pytest.raises(TokenError) as exc:
        source.token()
    assert exc.value.permanent and exc.value.code == "AADSTS7000222"


def test_microsoft_device_code_through_msal_then_refresh(oauth_server, factory):
    oauth_server.register_client("public-app", public=True)
    settings = _settings(
        provider="microsoft",
        flow="device_code",
        tenant="contoso.example",
        authority=oauth_server.authority("contoso.example"),
        client_id="public-app",
        ca_file=str(oauth_server.ca_file),
    )
    clock = Clock()
    source = _source(settings, factory, clock)
    with pytest.raises(TokenError) as exc:  # nobody signed in yet
        source.token()
    assert exc.value.permanent and exc.value.code == "no_token" and "auth login support" in exc.value.hint
    prompt = source.start_login()
    assert prompt.verification_uri.endswith("/devicelogin") and prompt.user_code in prompt.message
    oauth_server.approve(prompt.user_code, USER)
    token = source.finish_login(prompt)
    assert oauth_server.introspect(token.value)["username"] == USER
    row = source.stored()
    assert not row.reauth_required and row.error_code is None
    clock.advance(hours=1)
    renewed = source.token()  # msal's acquire_token_by_refresh_token
    assert renewed.value != token.value and oauth_server.token_requests("refresh_token") == 1
    assert oauth_server.introspect(renewed.value)["username"] == USER


def test_google_service_account_through_google_auth(oauth_server, factory, tmp_path):
    info = oauth_server.register_service_account("mailbridge@project.iam.gserviceaccount.com")
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(info))
    settings = _settings(
        provider="google", flow="service_account", service_account_file=str(key_file), token_url=oauth_server.token_url
    )
    source = _source(settings, factory, Clock())
    token = source.token()
    assert oauth_server.introspect(token.value)["username"] == USER  # with_subject: the mailbox
    assert oauth_server.token_requests(JWT_BEARER_GRANT) == 1


def test_google_refresh_token_through_google_auth(oauth_server, factory):
    oauth_server.register_client("gclient", "pub-secret")
    seed = oauth_server.mint_refresh_token("gclient", USER, scope="https://mail.google.com/")
    settings = _settings(
        provider="google",
        flow="refresh_token",
        token_url=oauth_server.token_url,
        client_id="gclient",
        client_secret_env="X",
        client_secret="pub-secret",
        refresh_token_env="Y",
        refresh_token=seed,
    )
    source = _source(settings, factory, Clock())
    token = source.token()
    assert oauth_server.introspect(token.value)["username"] == USER
    live = oauth_server.live_refresh_tokens(USER)
    with session_scope(factory) as s:
        assert token_store.read(s, "support", TokenCipher(KEY)).refresh_token == live[0] != seed


def test_a_lease_left_by_a_crashed_instance_is_taken_over(oauth_server, factory):
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    clock = Clock()
    source = _source(_generic_cc(oauth_server, client.secret), factory, clock)
    source.token()
    clock.advance(hours=1)
    with session_scope(factory) as s:  # another instance took the lease and died 2 minutes ago
        token_store.take_lease(
            s, "support", "crashed", clock.now - timedelta(minutes=2), clock.now - timedelta(seconds=1)
        )
    assert source.token().value in oauth_server.access_tokens()
    assert oauth_server.token_requests("client_credentials") == 2
    assert source.stored().lease_owner is None


def test_a_wrong_token_key_is_a_permanent_error_with_a_hint(oauth_server, factory):
    client = oauth_server.register_client("mailbridge", mailbox=USER)
    _source(_generic_cc(oauth_server, client.secret), factory, Clock()).token()
    other = _source(_generic_cc(oauth_server, client.secret), factory, Clock(), key=Fernet.generate_key().decode())
    with pytest.raises(TokenError) as exc:
        other.token()
    assert exc.value.permanent and exc.value.code == "token_key" and "tokens.key" in exc.value.hint


def test_two_apps_on_one_database_share_one_token(oauth_server, db_url, tmp_path, monkeypatch):
    """Two `App`s built from one configuration (two instances of the service), each with its IMAP
    poller's and its SMTP sender's use of the account's token, all at once: one token request."""
    from mailbridge.app import App
    from mailbridge.settings import load_settings

    client = oauth_server.register_client("mailbridge", mailbox=USER)
    monkeypatch.setenv("MB_T_SECRET", client.secret)
    monkeypatch.setenv("MB_T_KEY", KEY)
    path = tmp_path / "mailbridge.toml"
    path.write_text(
        f"""
var_dir = "{tmp_path / "var"}"
[database]
url = "{db_url}"
[[accounts]]
name = "support"
host = "127.0.0.1"
tls = "none"
user = "{USER}"
auth = "oauth2"
[accounts.oauth2]
provider = "generic"
flow = "client_credentials"
token_url = "{oauth_server.token_url}"
client_id = "mailbridge"
client_secret_env = "MB_T_SECRET"
[[queues]]
name = "support"
addresses = ["{USER}"]
account = "support"
[smtp]
host = "127.0.0.1"
tls = "none"
user = "{USER}"
auth = "oauth2"
oauth2_account = "support"
[tokens]
key_env = "MB_T_KEY"
""",
        encoding="utf-8",
    )
    settings = load_settings(path)
    apps = [App(settings), App(settings)]
    try:
        apps[0].upgrade_db()
        sources = [s for a in apps for s in (a.token_sources["support"], a.smtp_tokens)]
        assert sources[0] is sources[1] and sources[0].owner != sources[2].owner  # shared within, not across
        barrier = threading.Barrier(len(sources))
        got = []

        def use(source):
            barrier.wait()
            got.append(source.token().value)

        threads = [threading.Thread(target=use, args=(src,)) for src in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 4 and len(set(got)) == 1
        assert oauth_server.token_requests() == 1
    finally:
        for a in apps:
            a.close()


def test_instances_waiting_for_a_renewal_that_is_refused_do_not_ask_again(oauth_server, factory):
    """Eight callers in two instances find the token due while the grant was revoked: one request,
    every caller gets the permanent refusal with its code."""
    oauth_server.register_client("mailbridge", "pub-secret")
    seed = oauth_server.mint_refresh_token("mailbridge", USER)
    clock = Clock()
    settings = _generic_rt(oauth_server, seed)
    sources = [_source(settings, factory, clock, owner=f"instance-{i}") for i in range(2)]
    sources[0].token()
    oauth_server.revoke_consent(USER, code=700082)
    clock.advance(hours=1)
    before = oauth_server.token_requests("refresh_token")
    barrier = threading.Barrier(8)
    codes = []

    def work(source):
        barrier.wait()
        try:
            source.token()
        except TokenError as e:
            codes.append((e.permanent, e.code))

    threads = [threading.Thread(target=work, args=(sources[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [(True, "AADSTS700082")] * 8
    assert oauth_server.token_requests("refresh_token") - before == 1

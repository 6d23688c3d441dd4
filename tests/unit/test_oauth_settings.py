"""The OAuth2 settings: auth = "oauth2" per account and for SMTP, the flows each provider allows,
secrets only from env or file, and the token store's key (a Fernet key, needed with any oauth2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mailbridge.settings import (
    AuthMode,
    ConfigError,
    OAuthFlow,
    OAuthProvider,
    SaslMechanism,
    load_settings,
)

KEY = Fernet.generate_key().decode()
ENV = {"MB_SECRET": "s3cr3t-client-value", "MB_KEY": KEY, "MB_RT": "first-refresh-token", "MB_PW": "pw"}

BASE = """\
[[accounts]]
name = "support"
host = "outlook.office365.com"
user = "support@vendor.example"
auth = "oauth2"
[accounts.oauth2]
{oauth}

[[accounts]]
name = "legacy"
host = "imap.vendor.example"
user = "legacy@vendor.example"
password_env = "MB_PW"
default_queue = "software"

[[queues]]
name = "software"
addresses = ["software-support@vendor.example"]
account = "support"

[smtp]
host = "smtp.office365.com"
{smtp}

{tokens}
"""

MS_APP = (
    'provider = "microsoft"\nflow = "client_credentials"\ntenant = "t1"\nclient_id = "c1"\n'
    'client_secret_env = "MB_SECRET"'
)
SMTP_SHARED = 'user = "support@vendor.example"\nauth = "oauth2"\noauth2_account = "support"'
TOKENS = '[tokens]\nkey_env = "MB_KEY"'


def _load(tmp_path: Path, oauth: str = MS_APP, smtp: str = SMTP_SHARED, tokens: str = TOKENS, env=None):
    p = tmp_path / "mb.toml"
    p.write_text(BASE.format(oauth=oauth, smtp=smtp, tokens=tokens), encoding="utf-8")
    return p, load_settings(p, ENV if env is None else env)


def _error(tmp_path: Path, **kw) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, **kw)
    return str(exc.value)


def test_microsoft_app_only_with_shared_smtp(tmp_path):
    _, s = _load(tmp_path)
    acc = s.account("support")
    assert acc.auth is AuthMode.OAUTH2 and acc.password is None
    o = acc.oauth2
    assert (o.provider, o.flow, o.mechanism) == (
        OAuthProvider.MICROSOFT,
        OAuthFlow.CLIENT_CREDENTIALS,
        SaslMechanism.XOAUTH2,
    )
    assert o.client_secret.get_secret_value() == "s3cr3t-client-value"
    assert o.scope_list == ["https://outlook.office365.com/.default"]
    assert o.authority_url == "https://login.microsoftonline.com/t1"
    # SMTP shares the account's token: one token source, named after the account.
    assert set(s.oauth_logins) == {"support"} and s.smtp_token_name == "support"
    assert s.account("legacy").auth is AuthMode.PASSWORD
    # Secrets are never in reprs or the settings dump.
    for text in (repr(s), s.model_dump_json()):
        assert "s3cr3t-client-value" not in text and KEY not in text


def test_default_scopes_per_provider(tmp_path):
    _, s = _load(tmp_path, oauth='provider = "microsoft"\nflow = "device_code"\ntenant = "t"\nclient_id = "c"')
    assert s.account("support").oauth2.scope_list == [
        "https://outlook.office365.com/IMAP.AccessAsUser.All",
        "https://outlook.office365.com/SMTP.Send",
    ]
    (tmp_path / "sa.json").write_text("{}")
    _, s = _load(
        tmp_path, oauth=f'provider = "google"\nflow = "service_account"\nservice_account_file = "{tmp_path}/sa.json"'
    )
    assert s.account("support").oauth2.scope_list == ["https://mail.google.com/"]


def test_smtp_with_its_own_generic_table(tmp_path):
    smtp = (
        'user = "support@vendor.example"\nauth = "oauth2"\n[smtp.oauth2]\nprovider = "generic"\n'
        'flow = "refresh_token"\ntoken_url = "http://127.0.0.1:9/token"\nclient_id = "c"\n'
        'refresh_token_env = "MB_RT"\nmechanism = "oauthbearer"'
    )
    _, s = _load(tmp_path, smtp=smtp)
    assert set(s.oauth_logins) == {"support", "smtp"} and s.smtp_token_name == "smtp"
    assert s.smtp.oauth2.refresh_token.get_secret_value() == "first-refresh-token"


@pytest.mark.parametrize(
    ("oauth", "expected"),
    [
        (
            'provider = "google"\nflow = "client_credentials"',
            "accounts[0].oauth2.flow: 'client_credentials' is not a flow of provider 'google' "
            "(use service_account or refresh_token)",
        ),
        ('provider = "microsoft"\nflow = "client_credentials"\nclient_id = "c"', "accounts[0].oauth2.tenant: set the"),
        (
            'provider = "microsoft"\nflow = "client_credentials"\ntenant = "t"\nclient_id = "c"',
            "accounts[0].oauth2.client_secret_env: app-only needs",
        ),
        ('provider = "generic"\nflow = "client_credentials"\nclient_id = "c"', "accounts[0].oauth2.token_url: set"),
        (
            'provider = "generic"\nflow = "device_code"\nclient_id = "c"\ntoken_url = "https://x.example/t"',
            "accounts[0].oauth2.device_authorization_url",
        ),
        (
            'provider = "generic"\nflow = "refresh_token"\nclient_id = "c"\ntoken_url = "http://sso.example/t"',
            "accounts[0].oauth2.token_url: 'http://sso.example/t' must be an https URL",
        ),
        (
            'provider = "microsoft"\nflow = "client_credentials"\nclient_secret = "x"',
            "accounts[0].oauth2.client_secret:",
        ),
        (MS_APP.replace("MB_SECRET", "MB_UNSET"), "environment variable MB_UNSET is not set"),
        ('provider = "aws"\nflow = "client_credentials"', "accounts[0].oauth2.provider"),
    ],
)
def test_bad_oauth_tables_name_the_key(tmp_path, oauth, expected):
    assert expected in _error(tmp_path, oauth=oauth)


def test_oauth_needs_the_token_key(tmp_path):
    assert 'tokens: a login uses auth = "oauth2": set tokens.key_env or tokens.key_file' in _error(tmp_path, tokens="")
    bad = _error(tmp_path, env={**ENV, "MB_KEY": "not-a-fernet-key"})
    assert "tokens.key: the key is not a Fernet key" in bad and "not-a-fernet-key" not in bad
    assert "tokens.key: put the key" in _error(tmp_path, tokens='[tokens]\nkey = "abc"')


def test_smtp_oauth_must_name_its_token(tmp_path):
    assert "smtp.oauth2_account: give oauth2_account or an [smtp.oauth2] table" in _error(
        tmp_path, smtp='user = "x@vendor.example"\nauth = "oauth2"'
    )
    assert "smtp.oauth2_account: account 'legacy' does not use oauth2" in _error(
        tmp_path, smtp='user = "x@vendor.example"\nauth = "oauth2"\noauth2_account = "legacy"'
    )
    assert 'smtp.user: auth = "oauth2" needs' in _error(tmp_path, smtp='auth = "oauth2"\noauth2_account = "support"')


def test_oauth_account_without_table_and_table_without_mode(tmp_path):
    p = tmp_path / "mb.toml"
    text = BASE.format(oauth=MS_APP, smtp="", tokens=TOKENS).replace('auth = "oauth2"\n[accounts.oauth2]\n', "")
    text = text.replace(MS_APP, "")
    p.write_text(
        text.replace('user = "support@vendor.example"\n', 'user = "support@vendor.example"\nauth = "oauth2"\n', 1)
    )
    with pytest.raises(
        ConfigError, match=r"accounts\[0\]\.oauth2: auth = \"oauth2\" needs an \[accounts.oauth2\] table"
    ):
        load_settings(p, ENV)
    p.write_text(BASE.format(oauth=MS_APP, smtp="", tokens=TOKENS).replace('auth = "oauth2"\n', "", 1))
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.auth: an oauth2 table is given"):
        load_settings(p, ENV)


def test_check_config_shows_the_logins_and_no_secret(tmp_path):
    from click.testing import CliRunner

    from mailbridge.cli import cli

    path, _ = _load(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "account support: support@vendor.example @ outlook.office365.com:993 (implicit, oauth2 microsoft/" in (
        result.output
    )
    assert "smtp: smtp.office365.com:587 (starttls, oauth2 as support@vendor.example with the token of support)" in (
        result.output
    )
    for secret in ENV.values():
        assert secret not in result.output

"""What a token endpoint's refusal means: the one place that decides whether a failed renewal needs a
person to sign in again or fix the app (``reauth_required``) or may pass by itself (transient), and
the hint in plain words for the log, ``mailbridge auth status`` and the alert mail.

OAuth2 errors (RFC 6749 5.2): ``invalid_grant`` (the refresh token or device code is dead: revoked
consent, changed password, expired after 90 days unused), ``invalid_client`` (wrong or expired
secret), ``unauthorized_client``, ``invalid_scope``, ``access_denied`` need a person. Microsoft adds
AADSTS numbers (in ``error_codes`` and the description), Google adds its own descriptions.
"""

from __future__ import annotations

import re

# OAuth error codes that no retry will cure.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "invalid_scope",
        "access_denied",
        "expired_token",  # RFC 8628: the device code expired before the user signed in
        "interaction_required",
        "consent_required",
        "invalid_request",
        "unsupported_grant_type",
    }
)

# Microsoft Entra ID error numbers people meet with mail apps, and what to do about each.
AADSTS_HINTS = {
    50173: "the grant was revoked, usually because the user's password changed or their sessions were "
    "revoked: a person must sign in again (`mailbridge auth login` for flow device_code)",
    70008: "the refresh token expired or was revoked (unused for 90 days, or revoked by an admin): a person "
    "must sign in again (`mailbridge auth login` for flow device_code)",
    700082: "the refresh token expired because it was not used for 90 days: a person must sign in again "
    "(`mailbridge auth login` for flow device_code)",
    70043: "a Conditional Access sign-in frequency policy ended the session: sign in again",
    50076: "Conditional Access requires multi-factor authentication: a person must sign in again",
    50079: "the user must register for multi-factor authentication, then sign in again",
    53003: "a Conditional Access policy blocks this sign-in (location, device); ask the tenant admin",
    50057: "the user account is disabled in Entra ID",
    50126: "wrong user name or password",
    65001: "admin consent is missing: grant admin consent for the app's API permissions in Entra ID",
    7000222: "the client secret expired: create a new secret in the app registration (Certificates & secrets) "
    "and update client_secret_env/_file",
    7000215: "the client secret is wrong: use the secret's Value (shown once when created), not its Secret ID",
    7000218: "the device-code flow needs a public client: set Authentication → Allow public client flows: Yes "
    "in the app registration",
    700016: "no application with this client_id in the tenant: check client_id and tenant",
    90002: "the tenant was not found: check tenant",
    900023: "the tenant is not a valid directory id or domain: check tenant",
    7000112: "the application is disabled in the tenant",
    500011: "the resource (Office 365 Exchange Online) is not in the tenant: check the scope",
    1002012: "the scope is not valid for the client credentials flow: use https://outlook.office365.com/.default",
}

# Google's words for what needs a person.
GOOGLE_HINTS = (
    (
        "client is unauthorized to retrieve access tokens",
        "domain-wide delegation is not set up for this service account's client id and scope "
        "https://mail.google.com/ (Admin console → Security → API controls → Domain-wide delegation)",
    ),
    ("token has been expired or revoked", "the refresh token was revoked or expired: create a new one"),
    ("invalid_grant: invalid email or user id", "subject is not a user of the Workspace domain"),
)

_AADSTS_RE = re.compile(r"AADSTS(\d+)")


def aadsts_codes(*texts: str | None, codes: list[int] | None = None) -> list[int]:
    """The AADSTS numbers in ``codes`` (msal's ``error_codes``) and in the texts."""
    out = list(codes or [])
    for text in texts:
        out += [int(n) for n in _AADSTS_RE.findall(text or "")]
    return list(dict.fromkeys(out))


def explain(error: str | None, description: str | None, codes: list[int] | None = None) -> tuple[bool, str]:
    """(permanent, hint) for a token endpoint's error. ``error`` is the OAuth error code (None for
    a failure without an answer: the endpoint away, a timeout: transient)."""
    numbers = aadsts_codes(description, codes=codes)
    for n in numbers:
        if n in AADSTS_HINTS:
            return True, f"AADSTS{n}: {AADSTS_HINTS[n]}"
    text = f"{error or ''}: {description or ''}".lower()
    for words, hint in GOOGLE_HINTS:
        if words in text:
            return True, hint
    if error is None:
        return False, "the token endpoint did not answer or failed; retrying with backoff"
    if error == "temporarily_unavailable" or error == "server_error":
        return False, "the token endpoint is unavailable for a moment; retrying with backoff"
    if error == "invalid_grant":
        return True, (
            "the refresh token (or device code) is no longer valid: a person must sign in again "
            "(`mailbridge auth login` for flow device_code, else a new refresh token)"
        )
    if error == "invalid_client":
        return True, "the client was refused: check client_id and the client secret (it may have expired)"
    if error in PERMANENT_ERRORS:
        return True, f"the token endpoint refused the request ({error}): check the app's configuration and consent"
    return False, f"the token endpoint answered {error}; retrying with backoff"


class TokenError(Exception):
    """A token could not be had. ``permanent``: a person must act (``reauth_required``); ``code``:
    the provider's error code (``invalid_grant``, ``AADSTS50173`` …); ``hint``: what to do."""

    def __init__(self, message: str, *, code: str | None, permanent: bool, hint: str):
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        self.hint = hint

    @classmethod
    def from_response(cls, error: str | None, description: str | None, codes: list[int] | None = None) -> TokenError:
        permanent, hint = explain(error, description, codes)
        numbers = aadsts_codes(description, codes=codes)
        code = f"AADSTS{numbers[0]}" if numbers else error
        words = (description or "").splitlines()[0][:300] if description else ""
        if error is None:
            message = words or "the token endpoint did not answer"
        else:
            message = f"{error}: {words}" if words else error
        return cls(message, code=code, permanent=permanent, hint=hint)

    def describe(self) -> str:
        """One line for logs, status and alert mails: the code, the provider's words, the hint."""
        return f"{self}; {self.hint}"


__all__ = ["TokenError", "aadsts_codes", "explain"]

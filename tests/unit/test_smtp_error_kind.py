"""The kind of an SMTP failure (``mailbridge_smtp_errors_total{kind}``): aiosmtplib's exceptions
inherit from each other (a refused greeting is a response *and* a connect error, a refused login
is a response), so the order of the checks is the rule."""

from __future__ import annotations

import aiosmtplib
import pytest

from mailbridge.metrics import SMTP_ERROR_KINDS
from mailbridge.outbound.sender import smtp_error_kind


@pytest.mark.parametrize(
    ("error", "connected", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), False, "connect"),
        (aiosmtplib.SMTPConnectResponseError(554, "no service"), False, "connect"),
        (aiosmtplib.SMTPConnectTimeoutError("timed out"), False, "connect"),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), False, "auth"),
        (aiosmtplib.SMTPSenderRefused(553, "not yours", "support@vendor.example"), True, "sender_refused"),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y.example")]),
            True,
            "recipient_refused",
        ),
        (aiosmtplib.SMTPDataError(552, "message too large"), True, "data_refused"),
        (aiosmtplib.SMTPResponseException(421, "closing"), True, "response"),
        (aiosmtplib.SMTPServerDisconnected("gone"), True, "connection_lost"),
        (aiosmtplib.SMTPReadTimeoutError("timed out"), True, "connection_lost"),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 not offered"), True, "client"),
    ],
)
def test_smtp_error_kind(error, connected, kind):
    assert smtp_error_kind(error, connected=connected) == kind
    assert kind in SMTP_ERROR_KINDS

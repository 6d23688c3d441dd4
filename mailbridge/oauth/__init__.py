"""OAuth2 logins for IMAP and SMTP (issue 12): the providers (msal, google-auth, authlib), the token
source that keeps each login's token in the database, and what a token endpoint's refusal means."""

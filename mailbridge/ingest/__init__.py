"""Inbound mail: fetch over IMAP, parse, classify, match and apply, a transaction per batch of mails
(a savepoint per mail)."""

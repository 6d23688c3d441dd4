"""Inbound mail: fetch over IMAP, parse, classify, match and apply, one transaction per mail."""

"""Outbound mail: templates, composition, the transactional outbox and the SMTP sender."""

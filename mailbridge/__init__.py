"""mailbridge: an e-mail support desk that runs itself (IMAP in, tickets, acknowledgements, SLAs)."""

__version__ = "0.1.0"

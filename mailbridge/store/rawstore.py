"""Content-addressed files under var/: raw inbound mails (gzip) and attachment bytes.

A file is named by the sha256 of its content, so writing twice is harmless and a sender-chosen
file name never reaches the file system. Files are written to a temporary name and renamed, so a
crash never leaves a half-written file under a final name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

# gzip level 1: raw mail compresses ~3x at this level and it costs little CPU on a backlog.
RAW_COMPRESSLEVEL = 1


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentStore:
    """Bytes by sha256 below ``root``: ``ab/cd/abcd….suffix``."""

    def __init__(self, root: Path, suffix: str, compress: bool):
        self.root = Path(root)
        self.suffix = suffix
        self.compress = compress

    def relpath(self, digest: str) -> str:
        return f"{digest[:2]}/{digest[2:4]}/{digest}{self.suffix}"

    def put(self, data: bytes, digest: str | None = None) -> tuple[str, str]:
        """Store ``data``; return (sha256, path relative to the root). Idempotent."""
        digest = digest or sha256_hex(data)
        rel = self.relpath(digest)
        final = self.root / rel
        if final.exists():
            return digest, rel
        final.parent.mkdir(parents=True, exist_ok=True)
        payload = gzip.compress(data, compresslevel=RAW_COMPRESSLEVEL, mtime=0) if self.compress else data
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, rel

    def get(self, rel: str) -> bytes:
        data = (self.root / rel).read_bytes()
        return gzip.decompress(data) if self.compress else data


def raw_store(var_dir: Path) -> ContentStore:
    return ContentStore(Path(var_dir) / "raw", ".eml.gz", compress=True)


def attachment_store(var_dir: Path) -> ContentStore:
    return ContentStore(Path(var_dir) / "attachments", ".bin", compress=False)

"""Child-process hygiene shared by the parse pool and the embedded servers."""

from __future__ import annotations

import sys


def die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when its parent dies, so a SIGKILLed service, test run or
    demo never leaves a parse worker or a server behind (prctl PR_SET_PDEATHSIG; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)

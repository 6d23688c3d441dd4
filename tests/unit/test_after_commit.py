"""``store/metrics_queries.after_commit``: a hook registered inside a mail's savepoint runs when
the whole batch commits — not when the savepoint is released (SQLAlchemy sends ``after_commit`` for
that too), never when the batch or the savepoint rolls back."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from mailbridge.store.metrics_queries import after_commit


def _session() -> Session:
    s = Session(create_engine("sqlite://"))
    s.execute(text("SELECT 1"))
    return s


def test_a_hook_in_a_savepoint_waits_for_the_outer_commit():
    calls: list[str] = []
    with _session() as s:
        with s.begin_nested():
            after_commit(s, lambda: calls.append("counted"))
        assert calls == []  # the savepoint was released, the batch has not committed
        s.commit()
    assert calls == ["counted"]


def test_a_hook_in_a_savepoint_is_dropped_when_the_batch_rolls_back():
    calls: list[str] = []
    with _session() as s:
        with s.begin_nested():
            after_commit(s, lambda: calls.append("counted"))
        s.rollback()
    assert calls == []


def test_a_hook_in_a_savepoint_that_rolls_back_is_dropped_though_the_batch_commits():
    calls: list[str] = []
    with _session() as s:
        try:
            with s.begin_nested():
                after_commit(s, lambda: calls.append("counted"))
                raise ValueError("the mail failed")
        except ValueError:
            pass
        s.commit()
    assert calls == []

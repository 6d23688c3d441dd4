"""Outbox retry schedule: exponential backoff from ``base``, capped at ``cap``, ±20 % jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from mailbridge.outbound.outbox import retry_at

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
BASE = 60.0
CAP = 3600.0


class _NoJitter(random.Random):
    """A Random whose ``uniform`` returns the midpoint: the nominal delay without jitter."""

    def uniform(self, a, b):
        return (a + b) / 2


def _delay(attempts: int, rng: random.Random, base: float = BASE, cap: float = CAP) -> float:
    return (retry_at(NOW, attempts, base, cap, rng) - NOW).total_seconds()


def _nominal(attempts: int, base: float = BASE, cap: float = CAP) -> float:
    return min(cap, base * 2 ** max(0, attempts - 1))


def test_grows_exponentially_until_the_cap():
    """Without jitter the delays are base, 2·base, 4·base, … and then stay at the cap."""
    rng = _NoJitter()
    delays = [_delay(n, rng) for n in range(1, 10)]
    assert delays == pytest.approx([60, 120, 240, 480, 960, 1920, 3600, 3600, 3600])


def test_zero_attempts_waits_base():
    """Attempt counts below one are treated as the first retry (base delay), never a shorter one."""
    rng = _NoJitter()
    assert _delay(0, rng) == pytest.approx(BASE)
    assert _delay(-3, rng) == pytest.approx(BASE)


@pytest.mark.parametrize("seed", [0, 1, 42, 20261120])
def test_jitter_stays_within_twenty_percent(seed):
    """Every jittered delay lies within ±20 % of the nominal (capped) delay."""
    rng = random.Random(seed)
    for attempts in range(1, 16):
        for _ in range(50):
            ratio = _delay(attempts, rng) / _nominal(attempts)
            assert 0.8 <= ratio <= 1.2, (attempts, ratio)


def test_jitter_really_spreads():
    """The jitter uses the whole ±20 % band, so simultaneous failures do not retry in lockstep."""
    rng = random.Random(7)
    ratios = [_delay(3, rng) / _nominal(3) for _ in range(500)]
    assert min(ratios) < 0.85
    assert max(ratios) > 1.15
    assert len({round(r, 6) for r in ratios}) > 400


def test_cap_bounds_the_delay_including_jitter():
    """However many attempts, the delay never exceeds the cap plus its 20 % jitter."""
    rng = random.Random(3)
    for attempts in range(1, 60):
        assert _delay(attempts, rng) <= CAP * 1.2 + 1e-6


def test_seeded_rng_is_reproducible():
    """The same seed gives the same schedule (the rng is injectable for tests)."""
    a = [retry_at(NOW, n, BASE, CAP, random.Random(99)) for n in range(1, 8)]
    b = [retry_at(NOW, n, BASE, CAP, random.Random(99)) for n in range(1, 8)]
    assert a == b


def test_result_is_in_the_future_and_keeps_the_timezone():
    """The next attempt is strictly after ``now`` and an aware datetime in the same zone."""
    at = retry_at(NOW, 1, BASE, CAP, random.Random(1))
    assert at > NOW
    assert at.tzinfo is UTC


def test_default_rng_is_used_when_none_given():
    """Without an rng the module-level random source is used and the bounds still hold."""
    delay = (retry_at(NOW, 2, BASE, CAP) - NOW).total_seconds()
    assert 0.8 * 120 <= delay <= 1.2 * 120


def test_huge_attempt_count_is_capped_not_an_error():
    """A very large attempt count still gives the capped delay instead of raising."""
    delay = _delay(5000, _NoJitter())
    assert delay == pytest.approx(CAP)

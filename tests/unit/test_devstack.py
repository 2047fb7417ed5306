"""`firehose dev`'s restart policy (the supervision itself is exercised in tests/integration/test_devstack.py)."""

from __future__ import annotations

from firehose.devstack import restart_delay


def test_restart_delay_doubles_up_to_30_seconds() -> None:
    assert [restart_delay(1.0, n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(0.5, 1) == 0.5
    assert restart_delay(1.0, 10_000) == 30.0

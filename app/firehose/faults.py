"""Failpoints: let the crash tests kill a real process at a chosen point with SIGKILL.

`FIREHOSE_FAILPOINT=<name>[:<n>]` (testing only) makes the n-th arrival (default the first) at the named point
kill the process without any clean-up, exactly like `kill -9` from outside. The points are the members of
`Failpoint`, named `<stage>.<moment>` (e.g. `flush.after_rename`), each with the recovery a crash there proves.
An unknown name or a bad count is a configuration error at start-up (`Settings.validate`), so a typo can never
turn a crash test into a test that crashes nothing. With the variable unset, `reached()` is a cheap no-op.
"""

from __future__ import annotations

import enum
import os
import signal


class Failpoint(enum.Enum):
    """A point where a crash test may kill the process; `value` is its name, `proves` what recovery it tests."""

    proves: str

    def __new__(cls, name: str, proves: str) -> Failpoint:
        member = object.__new__(cls)
        member._value_ = name
        member.proves = proves
        return member

    INGEST_BEFORE_APPEND = (
        "ingest.before_append",
        "events read but not yet appended are read again from the stored cursor after a restart",
    )
    INGEST_AFTER_APPEND = (
        "ingest.after_append",
        "events appended before the crash are recognised in the stream's tail and not appended twice",
    )
    FLUSH_AFTER_BEGIN = (
        "flush.after_begin",
        "a recorded batch with no file written yet is redone from the same stream entries",
    )
    FLUSH_AFTER_RENAME = (
        "flush.after_rename",
        "a batch with some files renamed into place is redone, overwriting them under the same names",
    )
    FLUSH_AFTER_INDEX = (
        "flush.after_index",
        "a batch whose posts are committed to the day's index but not acknowledged is redone without doubling "
        "index documents",
    )
    FLUSH_BEFORE_COMMIT = (
        "flush.before_commit",
        "a batch whose files are all in place but not acknowledged is redone without doubling rows",
    )
    FLUSH_AFTER_COMMIT = (
        "flush.after_commit",
        "an acknowledged batch is never written again; the next run goes on with the next entries",
    )
    COMPACT_BEFORE_EXCHANGE = (
        "compact.before_exchange",
        "readers keep the old files; the next run removes the staging debris and compacts again",
    )
    COMPACT_AFTER_EXCHANGE = (
        "compact.after_exchange",
        "readers see only the new files; the next run deletes the swapped-out old ones from staging",
    )


def valid_names() -> str:
    """The failpoint names, comma-separated (for error messages)."""
    return ", ".join(p.value for p in Failpoint)


def parse_spec(spec: str) -> tuple[Failpoint | None, int]:
    """`<name>[:<n>]` as (point, n); ("", ...) is (None, 1). Raises ValueError naming the valid points."""
    name, _, nth = spec.strip().partition(":")
    if not name:
        return None, 1
    try:
        point = Failpoint(name)  # type: ignore[call-arg]  # lookup by value (the enum's __new__ builds members)
    except ValueError:
        raise ValueError(f"unknown failpoint {name!r}; valid names: {valid_names()}") from None
    if not nth:
        return point, 1
    if not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"the count after {name!r}: must be a whole number >= 1, got {nth!r}")
    return point, int(nth)


class Failpoints:
    """Counts arrivals at the configured point and kills the process at its n-th arrival."""

    def __init__(self, spec: str) -> None:
        self.point, self.nth = parse_spec(spec)
        self.arrivals = 0

    def reached(self, point: Failpoint) -> None:
        """Mark arrival at `point`; SIGKILL this process if it is the configured failpoint's n-th arrival."""
        if point is not self.point:
            return
        self.arrivals += 1
        if self.arrivals == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)

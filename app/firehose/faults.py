"""Failpoints: let the crash tests kill a real process at a chosen point with SIGKILL.

`FIREHOSE_FAILPOINT=<name>[:<n>]` (testing only) makes the n-th arrival (default the first) at the named point
kill the process without any clean-up, exactly like `kill -9` from outside. Points are named
`<stage>.<moment>`, e.g. `flush.after_rename`. With the variable unset, `reached()` is a cheap no-op.
"""

from __future__ import annotations

import os
import signal
from collections import Counter


class Failpoints:
    """Counts arrivals at named points and kills the process at the configured one."""

    def __init__(self, spec: str) -> None:
        name, _, nth = spec.partition(":")
        self.name = name
        self.nth = int(nth) if nth else 1
        self.arrivals: Counter[str] = Counter()

    def reached(self, point: str) -> None:
        """Mark arrival at `point`; SIGKILL this process if it is the configured failpoint."""
        if not self.name or point != self.name:
            return
        self.arrivals[point] += 1
        if self.arrivals[point] == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)

"""How the simulator runs: `SimulatorOptions`, one field per `firehose simulate` flag, and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from firehose.simulator.clock import parse_time
from firehose.simulator.generator import IDENTITY_HANDLE_SHARE
from firehose.simulator.profiles import DEFAULT_PROFILE, profile_named

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6008


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulator runs (the `firehose simulate` flags). Port 0 picks a free port.

    `dns_port`: None = no DNS server; 0 = any free port (UDP and TCP alike; tests), as `port`. The command line's
    `--dns-port 0` (its default) means None. `profile` names the network profile (`firehose.simulator.profiles`);
    `diurnal`, `peak_ratio` and `bursts` of None take the profile's own.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    seed: int = 0
    rate: float = 100.0
    start: str = "now"
    days: float | None = None
    events: int | None = None
    profile: str = DEFAULT_PROFILE
    diurnal: bool | None = None
    peak_ratio: float | None = None
    bursts: bool | None = None
    users: int = 2_000_000
    jitter_ms: float = 40.0
    identity_handle_share: float = IDENTITY_HANDLE_SHARE
    dns_port: int | None = None
    replay: Path | None = None
    loop: bool = False
    start_on_connect: bool = False
    backlog_hours: float = 0.0
    """Live mode: the events begin this long before the server starts, so a subscriber whose cursor is that old
    (an ingester back from an outage) has that much to catch up, then follows live."""

    def validate(self) -> None:
        """Reject combinations that cannot run, saying which flag to change."""
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError(f"--rate must be >= 0 events per second (0 = as fast as possible), got {self.rate}")
        if self.events is not None and self.events < 0:
            raise ValueError(f"--events must be >= 0, got {self.events}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"--days must be > 0, got {self.days}")
        if not 0.0 <= self.identity_handle_share <= 1.0:
            raise ValueError(f"--identity-handle-share must be between 0 and 1, got {self.identity_handle_share}")
        profile_named(self.profile)  # names the profiles there are when it is not one
        if self.peak_ratio is not None and self.peak_ratio < 1:
            raise ValueError(f"--peak-ratio must be >= 1 (peak/trough of the diurnal curve), got {self.peak_ratio}")
        if self.dns_port is not None and not 0 <= self.dns_port <= 65535:
            raise ValueError(f"--dns-port must be a port number (0 = no DNS server), got {self.dns_port}")
        if self.replay is not None:
            if not self.replay.is_file():
                raise ValueError(f"--replay {self.replay}: no such file")
            return
        if self.start == "now" and self.rate == 0:
            raise ValueError("--rate 0 (as fast as possible) needs a --start time; live mode (--start now) "
                             "follows the wall clock at --rate events per second")
        if self.start != "now":
            parse_time(self.start)
        if not 0 <= self.backlog_hours <= 72 or not math.isfinite(self.backlog_hours):
            raise ValueError(f"--backlog-hours must be between 0 and 72 (Jetstream keeps about 24-36 h), got "
                             f"{self.backlog_hours}")
        if self.backlog_hours and self.start != "now":
            raise ValueError("--backlog-hours is for live mode (--start now): a backlog behind the wall clock")
        if self.loop:
            raise ValueError("--loop only applies to --replay")


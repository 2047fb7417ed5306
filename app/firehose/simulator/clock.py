"""Simulated time: the rate profile, the mapping between event numbers and times, and time formats.

Event `i` has a base time `Clock.base_us(i)` from the rate `Profile` (constant, or a diurnal sine with peak/trough
1.6 across calendar days); base times never decrease, and `Clock.index_at_or_after(t)` inverts the mapping.
`IsoClock` and `iso_time` format times as Jetstream does; `parse_time` reads the ISO times the command line takes.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

EVENTS_PER_DAY = 8_100_000
"""The seed documents' daily volume; `Profile()` defaults to it (93.75 events per simulated second)."""

DEFAULT_START_US = 1_779_667_200_000_000  # 2026-05-25T00:00:00Z, the golden file's day


class IsoClock:
    """Formats unix microseconds as Jetstream's `2026-05-25T14:23:28.778Z`, caching the per-second prefix."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, time_us: int) -> str:
        sec, us = divmod(time_us, 1_000_000)
        prefix = self._cache.get(sec)
        if prefix is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            prefix = dt.datetime.fromtimestamp(sec, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._cache[sec] = prefix
        return f"{prefix}.{us // 1000:03d}Z"


def iso_time(time_us: int) -> str:
    """`2026-05-25T14:23:28.778Z` for a time in unix microseconds."""
    return IsoClock()(time_us)


def parse_time(value: str) -> int:
    """Unix microseconds from an ISO 8601 time (`2026-05-25`, `2026-05-25T14:00:00Z`, ...; naive = UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-05-25T00:00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * 1_000_000 + parsed.microsecond


# ---------------------------------------------------------------------------------------------------------------
# Time profile
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How events spread over simulated time.

    `rate` is the mean number of events per simulated second. With `diurnal`, the instantaneous rate follows a
    sine over the UTC day, highest at `peak_hour_utc` and `peak_ratio` times the lowest, with the same daily mean.
    """

    rate: float = EVENTS_PER_DAY / 86_400
    diurnal: bool = False
    peak_ratio: float = 1.6
    peak_hour_utc: float = 15.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"the profile rate must be a positive number of events per second, got {self.rate!r}")
        if self.peak_ratio < 1:
            raise ValueError(f"peak_ratio must be >= 1, got {self.peak_ratio!r}")

    @property
    def amplitude(self) -> float:
        """Relative amplitude A of the sine: rate * (1 +- A), so peak/trough = (1+A)/(1-A)."""
        return (self.peak_ratio - 1) / (self.peak_ratio + 1) if self.diurnal else 0.0

    def rate_at(self, unix_s: float) -> float:
        """Instantaneous events per second at a unix time."""
        a = self.amplitude
        if not a:
            return self.rate
        return self.rate * (1 + a * math.cos(2 * math.pi * (unix_s - self.peak_hour_utc * 3600) / 86_400))


ANCHOR = 64
"""With a diurnal curve, exact base times are solved every ANCHOR events and interpolated in between."""


class Clock:
    """Maps event numbers to base times (unix µs) and back for one profile and start time."""

    def __init__(self, profile: Profile, start_us: int) -> None:
        self.profile = profile
        self.start_us = start_us
        self._start_s = start_us / 1e6
        self._a = profile.amplitude
        self._w = 2 * math.pi / 86_400
        self._phase0 = self._w * (self._start_s - profile.peak_hour_utc * 3600)
        self._k = self._a / self._w
        self._sin0 = math.sin(self._phase0)
        self._anchors: dict[int, float] = {}

    def count(self, rel_s: float) -> float:
        """Expected number of events in the first `rel_s` simulated seconds (the cumulative rate)."""
        if not self._a:
            return self.profile.rate * rel_s
        return self.profile.rate * (rel_s + self._k * (math.sin(self._phase0 + self._w * rel_s) - self._sin0))

    def seconds(self, i: int) -> float:
        """Simulated seconds after the start at which event `i` is due (solves count(t) = i)."""
        rate = self.profile.rate
        t = i / rate
        if not self._a:
            return t
        a, w, p0 = self._a, self._w, self._phase0
        for _ in range(30):
            f = rate * (t + self._k * (math.sin(p0 + w * t) - self._sin0)) - i
            step = f / (rate * (1 + a * math.cos(p0 + w * t)))
            t -= step
            if abs(step) < 1e-9:
                break
        return t

    def base_us(self, i: int) -> int:
        """Base time of event `i` in unix microseconds (non-decreasing in `i`).

        With a diurnal curve, exact times are solved every `ANCHOR` events and interpolated linearly in between
        (the rate hardly changes over a few dozen events; the result stays monotone and deterministic).
        """
        if not self._a:
            return self.start_us + math.floor(i / self.profile.rate * 1e6)
        k, r = divmod(i, ANCHOR)
        t0 = self._anchor(k)
        if r:
            t0 += (self._anchor(k + 1) - t0) * r / ANCHOR
        return self.start_us + math.floor(t0 * 1e6)

    def _anchor(self, k: int) -> float:
        t = self._anchors.get(k)
        if t is None:
            if len(self._anchors) > 65_536:
                self._anchors.clear()
            t = self._anchors[k] = self.seconds(k * ANCHOR)
        return t

    def index_at_or_after(self, time_us: int) -> int:
        """The smallest i >= 0 with base_us(i) >= time_us."""
        if time_us <= self.start_us:
            return 0
        i = max(0, math.ceil(self.count((time_us - self.start_us) / 1e6)))
        while i > 0 and self.base_us(i - 1) >= time_us:
            i -= 1
        while self.base_us(i) < time_us:
            i += 1
        return i

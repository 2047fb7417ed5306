"""Simulated time: the rate profile, the mapping between event numbers and times, and time formats.

Event `i` has a base time `Clock.base_us(i)` from the rate `Profile` (constant, or a diurnal sine with a given
peak/trough ratio across calendar days, optionally with short `Bursts` on top); base times never decrease, and
`Clock.index_at_or_after(t)` inverts the mapping. `IsoClock` and `iso_time` format times as Jetstream does;
`parse_time` reads the ISO times the command line takes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import itertools
import math
import random
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
class Bursts:
    """Short spikes on top of the rate curve, the same number in every UTC day.

    The day is cut into `per_day` equal slices and each slice holds one burst at a random place (so bursts never
    overlap or cross midnight), `minutes` long and `factor` times the rate around it, both drawn uniformly from
    their ranges. Where they fall is a pure function of the generator's seed and the day (`Clock.bursts_of_day`).
    The rest of the day is scaled down a little so that every UTC day keeps the profile's mean.
    """

    per_day: int = 6
    minutes: tuple[float, float] = (2.0, 10.0)
    factor: tuple[float, float] = (2.0, 3.0)

    def __post_init__(self) -> None:
        low, high = self.minutes
        if not 1 <= self.per_day <= 96 or not 0 < low <= high <= 1440 / self.per_day / 2:
            raise ValueError(f"bursts: 1-96 a day, each at most half of its slice of the day, got {self}")
        if not 1 <= self.factor[0] <= self.factor[1]:
            raise ValueError(f"bursts: factors must be >= 1 and low <= high, got {self.factor}")


@dataclass(frozen=True)
class Profile:
    """How events spread over simulated time.

    `rate` is the mean number of events per simulated second. With `diurnal`, the instantaneous rate follows a
    sine over the UTC day, highest at `peak_hour_utc` and `peak_ratio` times the lowest, with the same daily mean.
    `bursts` adds short spikes on top (see `Bursts`); every UTC day still has the mean `rate`.
    """

    rate: float = EVENTS_PER_DAY / 86_400
    diurnal: bool = False
    peak_ratio: float = 1.6
    peak_hour_utc: float = 15.0
    bursts: Bursts | None = None

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
        """Instantaneous events per second of the curve at a unix time (bursts aside: see `Clock.rate_at`)."""
        a = self.amplitude
        if not a:
            return self.rate
        return self.rate * (1 + a * math.cos(2 * math.pi * (unix_s - self.peak_hour_utc * 3600) / 86_400))

    @property
    def peak_rate_bound(self) -> float:
        """No instant of any day has more events per second than this (the curve's peak times the largest burst)."""
        return self.rate * (1 + self.amplitude) * (self.bursts.factor[1] if self.bursts else 1.0)


DAY_S = 86_400


@dataclass(frozen=True)
class BurstDay:
    """One UTC day of a bursty profile: the day cut at every burst's start and end into segments, each with its
    rate multiplier, and the expected events before each cut (day-relative seconds; see `Clock`)."""

    edges: tuple[float, ...]  # 0, start_1, end_1, ..., 86400
    multipliers: tuple[float, ...]  # per segment: the burst's factor, or 1; all times the day's scale
    counts: tuple[float, ...]  # expected events from midnight to each edge; counts[-1] = rate * 86400


ANCHOR = 64
"""With a diurnal curve, exact base times are solved every ANCHOR events and interpolated in between."""


class Clock:
    """Maps event numbers to base times (unix µs) and back for one profile, start time and seed (bursts only)."""

    def __init__(self, profile: Profile, start_us: int, seed: int = 0) -> None:
        self.profile = profile
        self.start_us = start_us
        self._start_s = start_us / 1e6
        self._a = profile.amplitude
        self._w = 2 * math.pi / 86_400
        self._phase0 = self._w * (self._start_s - profile.peak_hour_utc * 3600)
        self._k = self._a / self._w
        self._sin0 = math.sin(self._phase0)
        self._anchors: dict[int, float] = {}
        self._burst_key = hashlib.blake2b(str(seed).encode(), digest_size=16, person=b"fh-bursts").digest()
        self._days: dict[int, BurstDay] = {}
        self._day0, self._tau0 = divmod(start_us, DAY_S * 1_000_000)
        if profile.bursts is not None:
            self._n0 = self._absolute_count(self._day0, self._tau0 / 1e6)

    def count(self, rel_s: float) -> float:
        """Expected number of events in the first `rel_s` simulated seconds (the cumulative rate)."""
        if self.profile.bursts is not None:
            day, tau = divmod(self._tau0 / 1e6 + rel_s, DAY_S)
            return self._absolute_count(self._day0 + int(day), tau) - self._n0
        if not self._a:
            return self.profile.rate * rel_s
        return self.profile.rate * (rel_s + self._k * (math.sin(self._phase0 + self._w * rel_s) - self._sin0))

    def rate_at(self, unix_s: float) -> float:
        """Instantaneous events per second at a unix time, bursts included."""
        if self.profile.bursts is None:
            return self.profile.rate_at(unix_s)
        day, tau = divmod(unix_s, DAY_S)
        schedule = self.bursts_of_day(int(day))
        segment = max(0, bisect.bisect_right(schedule.edges, tau) - 1)
        return self.profile.rate_at(unix_s) * schedule.multipliers[min(segment, len(schedule.multipliers) - 1)]

    def bursts_of_day(self, day: int) -> BurstDay:
        """The burst schedule of UTC day `day` (days since 1970-01-01), a pure function of the seed and the day."""
        schedule = self._days.get(day)
        if schedule is None:
            if len(self._days) > 4096:
                self._days.clear()
            schedule = self._days[day] = self._make_day(day)
        return schedule

    def _make_day(self, day: int) -> BurstDay:
        bursts = self.profile.bursts
        assert bursts is not None
        digest = hashlib.blake2b(day.to_bytes(8, "big", signed=True), digest_size=16, key=self._burst_key).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        slice_s = DAY_S / bursts.per_day
        edges, factors = [0.0], [1.0]
        for j in range(bursts.per_day):
            length = 60 * rng.uniform(*bursts.minutes)
            begin = j * slice_s + rng.random() * (slice_s - length)
            edges += [begin, begin + length]
            factors += [rng.uniform(*bursts.factor), 1.0]
        edges.append(float(DAY_S))
        integrals = [self._curve_integral(a, b) for a, b in itertools.pairwise(edges)]
        scale = DAY_S / sum(m * x for m, x in zip(factors, integrals, strict=True))
        multipliers = tuple(scale * m for m in factors)
        counts = [0.0]
        for m, x in zip(multipliers, integrals, strict=True):
            counts.append(counts[-1] + self.profile.rate * m * x)
        counts[-1] = self.profile.rate * DAY_S
        return BurstDay(tuple(edges), multipliers, tuple(counts))

    def _curve_integral(self, a: float, b: float) -> float:
        """The integral of the curve's shape (1 + A cos) from day-relative second a to b."""
        p = self.profile.peak_hour_utc * 3600
        return (b - a) + self._k * (math.sin(self._w * (b - p)) - math.sin(self._w * (a - p)))

    def _absolute_count(self, day: int, tau: float) -> float:
        """Expected events from 1970-01-01 to second `tau` of UTC day `day` (every day has rate * 86400)."""
        schedule = self.bursts_of_day(day)
        segment = min(max(0, bisect.bisect_right(schedule.edges, tau) - 1), len(schedule.multipliers) - 1)
        start = schedule.edges[segment]
        within = self.profile.rate * schedule.multipliers[segment] * self._curve_integral(start, tau)
        return self.profile.rate * DAY_S * day + schedule.counts[segment] + within

    def _burst_seconds(self, i: int) -> float:
        """`seconds(i)` of a bursty profile: find the day, then the segment, then solve within it (smooth there)."""
        rate = self.profile.rate
        target = self._n0 + i
        day = math.floor(target / (rate * DAY_S))
        schedule = self.bursts_of_day(day)
        left = target - rate * DAY_S * day
        segment = min(max(0, bisect.bisect_right(schedule.counts, left) - 1), len(schedule.multipliers) - 1)
        low, high = schedule.edges[segment], schedule.edges[segment + 1]
        speed = rate * schedule.multipliers[segment]
        need = left - schedule.counts[segment]
        p = self.profile.peak_hour_utc * 3600
        tau = min(high, low + need / speed)
        for _ in range(40):
            step = (speed * self._curve_integral(low, tau) - need) / (speed * (1 + self._a * math.cos(
                self._w * (tau - p))))
            tau = min(high, max(low, tau - step))
            if abs(step) < 1e-9:
                break
        return (day - self._day0) * DAY_S + tau - self._tau0 / 1e6

    def seconds(self, i: int) -> float:
        """Simulated seconds after the start at which event `i` is due (solves count(t) = i)."""
        if self.profile.bursts is not None:
            return self._burst_seconds(i)
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
        if not self._a and self.profile.bursts is None:
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

"""Network profiles: what a simulated day of the firehose is, by name (`firehose simulate --profile real|seed`).

A profile fixes the daily volume, the shape of the day (diurnal curve, bursts), the event mix and the text model.
`real` (the default) is the 2026 network; `seed` is the planning documents' 8.1M-a-day stream, byte for byte what
the simulator made before profiles existed. Each profile's `source` says what its numbers rest on; every report
states it. docs/simulator.md gives the derivations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firehose.simulator.clock import EVENTS_PER_DAY, Bursts, Profile
from firehose.simulator.mix import MIX, REAL_MIX_FILE, Kind, read_mix
from firehose.simulator.realtext import REAL_VOCABULARY, RealText
from firehose.simulator.records import Population, PostShape, SeedText, TextModel
from firehose.simulator.vocabulary import VOCABULARY


@dataclass(frozen=True)
class NetworkProfile:
    """One named stream: volume, shape of the day, mix, texts, and where the figures come from."""

    name: str
    source: str
    """One sentence: what the profile's figures rest on (reports print it)."""
    events_per_day: int
    mix: tuple[Kind, ...]
    text: Callable[[Population], TextModel]
    vocabulary: dict[str, float]
    """The searchable strings' expected shares of posts (`firehose.simulator.vocabulary.vocabulary_shares`)."""
    shape: PostShape
    diurnal: bool
    """Whether the diurnal curve is on unless a flag says otherwise."""
    peak_ratio: float
    peak_hour_utc: float
    bursts: Bursts | None

    def timing(self, rate: float | None = None, *, diurnal: bool | None = None, peak_ratio: float | None = None,
               bursts: bool | None = None) -> Profile:
        """The rate profile: `rate` events per simulated second (default: the profile's day), the profile's curve
        and bursts unless overridden (`bursts=True` on a profile without bursts gives the default `Bursts()`)."""
        with_bursts = (self.bursts is not None) if bursts is None else bursts
        return Profile(rate=rate or self.events_per_day / 86_400,
                       diurnal=self.diurnal if diurnal is None else diurnal,
                       peak_ratio=self.peak_ratio if peak_ratio is None else peak_ratio,
                       peak_hour_utc=self.peak_hour_utc,
                       bursts=(self.bursts or Bursts()) if with_bursts else None)

    @property
    def peak_events_per_s(self) -> float:
        """The highest instantaneous rate a day of this profile can reach (curve peak times the largest burst)."""
        return self.timing().peak_rate_bound

    def describe(self) -> str:
        """`real: 45,000,000 events a day (...)`: the profile's name, volume and shape in one line."""
        shape = (f"diurnal sine, peak/trough {self.peak_ratio:g}, peak {self.peak_hour_utc:02.0f}:00 UTC"
                 if self.diurnal else "constant rate")
        if self.bursts is not None:
            b = self.bursts
            shape += (f"; {b.per_day} bursts a day of {b.minutes[0]:g}-{b.minutes[1]:g} min at {b.factor[0]:g}-"
                      f"{b.factor[1]:g}x; peak <= {self.peak_events_per_s:,.0f} events/s")
        return f"{self.name}: {self.events_per_day:,} events a day ({self.events_per_day / 86_400:,.1f}/s; {shape})"


REAL_EVENTS_PER_DAY = 45_000_000
"""The 2026 network: ~520 events/s on average (docs/simulator.md, "Profiles")."""

REAL = NetworkProfile(
    name="real",
    source=("the 2026 firehose: rate from Jetstream's v2 performance notes (bluesky-social/jetstream, "
            "specs/notes/2026-07-08-performance-exploration-cpu2-pop3.md: live 370-520 events/s) and ClickHouse's "
            "~1.5B documents a month; likes share from the same notes' collection-filter run, the other "
            "collections in the proportions of ClickHouse's Bluesky dataset; peak hour and peak/mean from one "
            "operator's 2026 account (2.2M posts a day, 130k+ at peak hours, peak ~12:00 UTC); languages, deletes "
            "and bursts estimated (docs/simulator.md)"),
    events_per_day=REAL_EVENTS_PER_DAY,
    mix=read_mix(REAL_MIX_FILE),
    text=RealText,
    vocabulary=REAL_VOCABULARY,
    shape=PostShape(reply_share=0.35, embed_share=0.32, via_share=0.10),
    diurnal=True,
    peak_ratio=2.4,
    peak_hour_utc=12.0,
    bursts=Bursts(per_day=6, minutes=(2.0, 10.0), factor=(2.0, 3.0)),
)
SEED = NetworkProfile(
    name="seed",
    source="the seed planning documents' estimate of 8.1M events a day (94/s); the simulator's stream before "
           "profiles, byte for byte (docs/simulator.md)",
    events_per_day=EVENTS_PER_DAY,
    mix=MIX,
    text=SeedText,
    vocabulary=VOCABULARY,
    shape=PostShape(),
    diurnal=False,
    peak_ratio=1.6,
    peak_hour_utc=15.0,
    bursts=None,
)
PROFILES: dict[str, NetworkProfile] = {p.name: p for p in (REAL, SEED)}
DEFAULT_PROFILE = REAL.name


def profile_named(name: str) -> NetworkProfile:
    """The profile called `name`, or a ValueError listing the names there are."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no profile {name!r}: choose one of {', '.join(PROFILES)}") from None

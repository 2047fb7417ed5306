"""Accounting: every generated event counted on the way in and found exactly once on the way out.

Definitions (the report repeats them):
- `events_generated`: event deliveries the generator produced. Day run: the simulator's `events_produced`
  (every frame it sent, replays included). Week/month runs: events generated into the writer (no replays).
- `events_duplicate`: deliberate replays among them, i.e. deliveries of an event that had been delivered before.
  The simulator numbers its events and serves every connection a contiguous index range, so this is
  `events_produced - (highest_index_sent + 1)`: the deliveries caused by the ingester's cursor rewinds. Below 0,
  some events were never sent (a connection started past the end of the one before): the run fails.
- `events_stored`: rows in the Parquet tables over the run's time range.
- The run passes when `events_stored == events_generated - events_duplicate`, every table holds exactly the rows
  the generator's kind sequence predicts for indices `[0, distinct)`, and no table holds an event key twice.

The expected rows per table come from `EventGenerator.kind_of(i)` (the mix is exact per 1000-event window), so
they are known without generating a single event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from firehose.schema import COLLECTION_TABLES, TABLE_NAMES
from firehose.simulator.generator import EventGenerator
from firehose.simulator.mix import WINDOW, Kind


def table_of(kind: Kind) -> str:
    """The table the flush routes a generated event of this mix entry to."""
    if kind.kind in ("identity", "account"):
        return kind.kind
    if kind.operation == "delete":
        return "deletes"
    return COLLECTION_TABLES.get(kind.collection or "", "records")


def expected_rows(generator: EventGenerator, start: int, stop: int) -> dict[str, int]:
    """Rows per table that events `start..stop-1` of `generator` produce (whole windows counted from the mix)."""
    counts: Counter[str] = Counter()
    first_full = -(-start // WINDOW)
    last_full = stop // WINDOW
    if first_full >= last_full:
        for i in range(start, stop):
            counts[table_of(generator.kind_of(i))] += 1
    else:
        for i in range(start, first_full * WINDOW):
            counts[table_of(generator.kind_of(i))] += 1
        for kind in generator.mix:
            counts[table_of(kind)] += kind.per_mille * (last_full - first_full)
        for i in range(last_full * WINDOW, stop):
            counts[table_of(generator.kind_of(i))] += 1
    return {t: counts.get(t, 0) for t in TABLE_NAMES}


@dataclass
class Accounting:
    """The figures of one run's accounting and the checks over them."""

    events_generated: int
    events_duplicate: int
    expected_by_table: dict[str, int]
    stored_by_table: dict[str, int]
    duplicate_keys_by_table: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def events_stored(self) -> int:
        return sum(self.stored_by_table.values())

    @property
    def events_distinct(self) -> int:
        return self.events_generated - self.events_duplicate

    def problems(self) -> list[str]:
        """Every way the run failed its accounting, as sentences (empty = passed)."""
        out = []
        if self.events_stored != self.events_distinct:
            out.append(f"events_stored {self.events_stored} != events_generated {self.events_generated} - "
                       f"events_duplicate {self.events_duplicate} = {self.events_distinct}")
        if self.events_duplicate < 0:
            out.append(f"{-self.events_duplicate} of the {self.events_distinct} events numbered up to the highest sent "
                       "were never sent: a connection started past the end of the one before (a resume without its "
                       "cursor: the ingester lost it)")
        expected_total = sum(self.expected_by_table.values())
        if expected_total != self.events_distinct:
            out.append(f"the generator's kind sequence predicts {expected_total} events but "
                       f"{self.events_distinct} distinct events were delivered")
        for table in TABLE_NAMES:
            want, got = self.expected_by_table.get(table, 0), self.stored_by_table.get(table, 0)
            if want != got:
                out.append(f"table {table}: {got} rows stored, {want} expected ({got - want:+d})")
            if self.duplicate_keys_by_table.get(table, 0):
                out.append(f"table {table}: {self.duplicate_keys_by_table[table]} events stored more than once")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()


def simulator_accounting(stats: dict[str, int], generator: EventGenerator, stored: dict[str, int],
                         duplicate_keys: dict[str, int], breakdown: dict[str, int] | None = None) -> Accounting:
    """Accounting of a day run from the simulator's /stats and the Parquet counts."""
    produced = int(stats["events_produced"])
    distinct = int(stats["highest_index_sent"]) + 1
    return Accounting(produced, produced - distinct, expected_rows(generator, 0, distinct), stored, duplicate_keys,
                      breakdown or {})

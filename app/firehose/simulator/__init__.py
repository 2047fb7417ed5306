"""The Jetstream simulator: realistic, deterministic Jetstream v1 events and a websocket server that sends them.

It is kept apart from the pipeline, as Jetstream keeps its own simulator: it ships in the wheel (the test host's
`firehose simulate` service and the validation harness use it), but no pipeline module imports it
(`tests/unit/test_layering.py` checks this); `firehose.cli` loads `command` only for `firehose simulate`.

Modules, from the words up to the server:

- `vocabulary`: the searchable words with known frequencies, the languages and the word lists posts are made of.
- `mix`: the kinds of events and how many of each in every 1000 (the table is `mix.csv`).
- `encoding`: base32 and TIDs. `identity`: each DID's handle, each handle's DID, the PLC directory's answer.
- `handle_dns`: the authoritative DNS server for the handles' `_atproto` TXT records (`--dns-port`).
- `clock`: the rate profile, event numbers <-> simulated times, Jetstream's time format, `parse_time`.
- `records`: the record makers (the `record` of every commit, by collection).
- `generator`: `EventGenerator`, the deterministic, indexable event sequence (per-event hashing, authors, posts).
- `options`: `SimulatorOptions`. `sources`: generated or replayed event sources and their live position.
- `subscription`: Jetstream's query parameters and options updates. `server`: the websocket and HTTP server,
  and `SimulatorThread` for tests. `command`: `firehose simulate`.

See `docs/simulator.md`.
"""

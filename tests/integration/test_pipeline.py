"""The real stages chained: simulator -> ingester -> Redis -> flush -> Parquet, compared field for field."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson

from firehose.buffer import Buffer
from firehose.config import Settings
from firehose.schema import route
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.sources import GeneratedSource, build_source
from tests.support.paths import GOLDEN
from tests.support.pipeline import CLI, all_rows, run_stage, stage_env
from tests.support.services import RedisServer, free_port, stop_process, wait_for_port

DAY = "2026-05-25T00:00:00Z"


def ingest_all(redis_server: RedisServer, env: dict[str, str], sim_args: list[str], expected: int) -> None:
    """Run the simulator and the ingester until `expected` events are buffered, then stop both."""
    port = free_port()
    sim = subprocess.Popen([*CLI, "simulate", "--port", str(port), *sim_args], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ingester = None
    try:
        wait_for_port(port)
        ingester = subprocess.Popen([*CLI, "ingest", "--url", f"ws://127.0.0.1:{port}/subscribe", "--cursor", "1"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_server.client()
        deadline = time.monotonic() + 60
        while int(client.hget("firehose:cursor", "events_in") or 0) < expected:
            assert time.monotonic() < deadline, "the ingester did not buffer every event in 60 s"
            assert ingester.poll() is None, "the ingester exited"
            time.sleep(0.1)
    finally:
        if ingester is not None:
            stop_process(ingester)
        stop_process(sim)


def test_golden_events_through_simulator_ingester_and_flush(redis_server: RedisServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = stage_env(redis_server.url, data)  # compressed frames, as from the real Jetstream
    ingest_all(redis_server, env, ["--replay", str(GOLDEN)], expected=10)
    flushed = run_stage(["flush"], env)
    assert flushed.returncode == 0, flushed.stderr
    rows = all_rows(data)
    expected: dict[str, list[dict]] = {}
    for line in GOLDEN.read_bytes().splitlines():
        table, row = route(orjson.loads(line), line)
        expected.setdefault(table, []).append(row)
    for table, table_rows in rows.items():
        want = sorted(expected.get(table, []), key=lambda r: r["time_us"])
        assert [{k: r[k] for k in w} for r, w in zip(table_rows, want, strict=True)] == want, table


def test_generated_events_are_stored_exactly_once(redis_server: RedisServer, tmp_path: Path) -> None:
    """20k generated events, with an ingester restart in the middle (a 5 s rewind): every event once."""
    data = tmp_path / "data"
    env = stage_env(redis_server.url, data, FIREHOSE_FLUSH_CHUNK="5000")
    sim_args = ["--rate", "0", "--start", DAY, "--events", "20000", "--seed", "5"]
    ingest_all(redis_server, env, sim_args, expected=8000)
    ingest_all(redis_server, env, sim_args, expected=20000)  # a second simulator process: same sequence
    flushed = run_stage(["flush"], env)
    assert flushed.returncode == 0, flushed.stderr
    stored = sum(len(r) for r in all_rows(data).values())
    assert stored == 20000
    settings = Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url})
    assert Buffer.connect(settings).unflushed_events() == 0
    assert int(redis_server.client().hget("firehose:cursor", "events_in")) == 20000  # replays never appended
    source = build_source(SimulatorOptions(seed=5, rate=0, start=DAY, events=20000))  # as the simulator built it
    assert isinstance(source, GeneratedSource)
    generator = source.generator
    wanted = {orjson.loads(generator.event_json(i))["time_us"] for i in range(20000)}
    assert {r["time_us"] for rs in all_rows(data).values() for r in rs} == wanted

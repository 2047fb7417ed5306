"""`firehose simulate`: its flags, and serving until SIGINT or SIGTERM (`firehose.cli` imports this lazily)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import orjson

from firehose.config import Settings
from firehose.simulator.generator import IDENTITY_HANDLE_SHARE
from firehose.simulator.options import DEFAULT_HOST, DEFAULT_PORT, SimulatorOptions
from firehose.simulator.profiles import DEFAULT_PROFILE, PROFILES
from firehose.simulator.server import Simulator

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose simulate`."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, 0 = any free one (default {DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, default=0, help="generator seed: same seed, same events (default 0)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="events per wall-clock second; 0 = as fast as subscribers read (default 100)")
    parser.add_argument("--start", default="now",
                        help="'now' = live (time_us follows the clock) or an ISO time for simulated history "
                             "(e.g. 2026-05-25T00:00:00Z) (default now)")
    parser.add_argument("--days", type=float, default=None,
                        help="simulated days to cover; with --events, spreads them over these days")
    parser.add_argument("--events", type=int, default=None,
                        help="stop producing after this many events (connections then idle)")
    parser.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                        help="network profile: real = the 2026 firehose (45M events a day, its mix, texts, curve "
                             "and bursts), seed = the seed documents' 8.1M a day (default %(default)s)")
    parser.add_argument("--diurnal", action=argparse.BooleanOptionalAction, default=None,
                        help="day/night rate curve on or off (default: the profile's: on for real, off for seed)")
    parser.add_argument("--peak-ratio", type=float, default=None,
                        help="diurnal peak/trough ratio (default: the profile's: 2.4 real, 1.6 seed)")
    parser.add_argument("--bursts", action=argparse.BooleanOptionalAction, default=None,
                        help="short spikes of 2-3x on top of the curve (default: the profile's: on for real)")
    parser.add_argument("--users", type=int, default=2_000_000, help="size of the DID population (default 2M)")
    parser.add_argument("--jitter-ms", type=float, default=40.0,
                        help="time_us is up to this much earlier than the event's slot (default 40)")
    parser.add_argument("--identity-handle-share", type=float, default=IDENTITY_HANDLE_SHARE,
                        help="share of identity events that carry a handle; the rest are {did, seq, time} like "
                             f"most real ones (default {IDENTITY_HANDLE_SHARE})")
    parser.add_argument("--dns-port", type=int, default=0,
                        help="also answer DNS (UDP and TCP, same --host) for the simulated handles' "
                             "_atproto TXT records on this port; 0 = no DNS server (default 0)")
    parser.add_argument("--replay", type=Path, default=None, help="replay this JSONL file's lines verbatim")
    parser.add_argument("--loop", action="store_true", help="with --replay: start over at the end, forever")
    parser.add_argument("--start-on-connect", action="store_true",
                        help="paced modes: the clock starts with the first subscriber, not at server start")
    parser.add_argument("--backlog-hours", type=float, default=0.0,
                        help="live mode: the events begin this many hours before the server starts (an outage "
                             "to catch up from: connect with an old cursor, or cursor=1 for the first event)")


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed `firehose simulate` flags."""
    return SimulatorOptions(
        host=args.host, port=args.port, seed=args.seed, rate=args.rate, start=args.start, days=args.days,
        events=args.events, profile=args.profile, diurnal=args.diurnal, peak_ratio=args.peak_ratio,
        bursts=args.bursts, users=args.users,
        jitter_ms=args.jitter_ms, identity_handle_share=args.identity_handle_share,
        dns_port=args.dns_port or None, replay=args.replay, loop=args.loop, start_on_connect=args.start_on_connect,
        backlog_hours=args.backlog_hours,
    )


async def _serve_until_signal(simulator: Simulator) -> None:
    await simulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping the simulator: %s", orjson.dumps(simulator.stats()).decode())
    await simulator.stop()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`firehose simulate`: serve until SIGINT/SIGTERM. The simulator is configured by flags, not settings."""
    del settings
    try:
        simulator = Simulator(options_from_args(args))
    except ValueError as exc:
        print(f"firehose simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signal(simulator))
    except OSError as exc:
        dns = f" and DNS port {args.dns_port}" if args.dns_port else ""
        print(f"firehose simulate: cannot listen on {args.host}:{args.port}{dns}: {exc} "
              "(choose another --port or --dns-port)", file=sys.stderr)
        return 1
    return 0

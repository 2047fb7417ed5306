"""`firehose dev`: its child environment (the caller's settings reach every process; it overrides only what it
owns) and its restart policy (the supervision itself is exercised in tests/integration/test_devstack.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from firehose.config import Settings
from firehose.devstack import _child_env, configure_parser, restart_delay

CALLER = {
    "PATH": "/usr/bin",
    "FIREHOSE_API_PAGE_SIZE": "7",  # not the stack's business: passes through
    "FIREHOSE_PLC_TIMEOUT": "0.5",
    "FIREHOSE_REDIS_URL": "redis://elsewhere:6379/0",  # the stack runs its own Redis: overridden
    "FIREHOSE_PLC_URL": "https://plc.directory",  # the simulator's accounts are only in its own directory
    "FIREHOSE_DNS_NAMESERVERS": "192.0.2.53",
    "FIREHOSE_WELLKNOWN_ENABLED": "true",
}


def dev_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["--sim-port", "7008", "--sim-dns-port", "7053", "--redis-port", "7390", *argv])


def test_the_callers_settings_reach_every_child_and_the_stack_owns_only_its_wiring(tmp_path: Path) -> None:
    env = _child_env(tmp_path, dev_args(), "ws://127.0.0.1:7008/subscribe", CALLER)
    for name in ("PATH", "FIREHOSE_API_PAGE_SIZE", "FIREHOSE_PLC_TIMEOUT"):
        assert env[name] == CALLER[name]
    assert env["FIREHOSE_REDIS_URL"] == "redis://127.0.0.1:7390/0"
    assert env["FIREHOSE_DATA_DIR"] == str(tmp_path / "data")
    # every identity resolver points at the simulator on loopback; no HTTPS well-known (it would leave the machine)
    assert env["FIREHOSE_PLC_URL"] == "http://127.0.0.1:7008/plc"
    assert env["FIREHOSE_RESOLVE_HANDLE_URL"] == "http://127.0.0.1:7008/xrpc/com.atproto.identity.resolveHandle"
    assert env["FIREHOSE_DNS_NAMESERVERS"] == "127.0.0.1:7053"
    assert env["FIREHOSE_WELLKNOWN_ENABLED"] == "false"
    assert Settings.from_env(env).api_page_size == 7  # and the children can read it


def test_with_a_real_jetstream_the_identity_settings_are_the_callers(tmp_path: Path) -> None:
    args = dev_args("--jetstream-url", "wss://jetstream.example/subscribe")
    env = _child_env(tmp_path, args, args.jetstream_url, CALLER)
    assert env["FIREHOSE_JETSTREAM_URLS"] == "wss://jetstream.example/subscribe"
    for name in ("FIREHOSE_PLC_URL", "FIREHOSE_DNS_NAMESERVERS", "FIREHOSE_WELLKNOWN_ENABLED"):
        assert env[name] == CALLER[name]
    assert "FIREHOSE_RESOLVE_HANDLE_URL" not in env


def test_restart_delay_doubles_up_to_30_seconds() -> None:
    assert [restart_delay(1.0, n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(0.5, 1) == 0.5
    assert restart_delay(1.0, 10_000) == 30.0

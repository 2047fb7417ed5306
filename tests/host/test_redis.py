"""Redis: AOF, noeviction, loopback only (sockets are in test_network), and its ACL users."""

from __future__ import annotations

import os

import pytest

from tests.support.host import journal, poll_until, redis_as, var


@pytest.mark.parametrize(
    "key,expected",
    [("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction")],
)
def test_redis_config(redis_cli, key, expected):
    out = redis_cli("CONFIG", "GET", key).splitlines()
    assert out[:1] == [key] and out[1:2] == [expected], f"CONFIG GET {key} -> {out}"


def test_redis_maxmemory_is_set(redis_cli):
    out = redis_cli("CONFIG", "GET", "maxmemory").splitlines()
    assert len(out) == 2 and int(out[1]) > 0, f"maxmemory is unlimited: {out}"


def test_redis_bind_is_loopback(redis_cli):
    out = redis_cli("CONFIG", "GET", "bind").splitlines()
    addrs = out[1].split() if len(out) > 1 else []
    assert addrs and all(a in ("127.0.0.1", "::1", "-::1") for a in addrs), f"bind = {addrs}"


def test_redis_answers(redis_cli):
    assert redis_cli("PING") == "PONG"


# --- ACL: the default user is off, each client has its own user and commands --------------------------------------


def test_default_user_is_off(host):
    out = redis_as(host, "redis://127.0.0.1:6379/0", "PING")
    assert "PONG" not in out.stdout, "Redis answers without a password (the default user is on)"


def test_app_user_is_limited(host, env_file):
    url = env_file["FIREHOSE_REDIS_URL"]
    assert redis_as(host, url, "PING").stdout.strip() == "PONG", "the app's user cannot log in"
    for command in (["FLUSHALL"], ["CONFIG", "SET", "maxmemory", "1"], ["CONFIG", "GET", "maxmemory"],
                    ["ACL", "LIST"], ["KEYS", "*"], ["GET", "not-a-firehose-key"]):
        out = redis_as(host, url, *command)
        assert "NOPERM" in out.stdout + out.stderr, f"the app's user may run {command}: {out.stdout} {out.stderr}"
    out = redis_as(host, url, "XLEN", "firehose:events")
    assert out.stdout.strip().isdigit(), f"the app's user may not run XLEN: {out.stdout} {out.stderr}"


def test_users_and_their_rules(redis_cli):
    users = {line.split()[1]: line for line in redis_cli("ACL", "LIST").splitlines()}
    assert set(users) == {"default", var("redis_app_user", "firehose"), var("redis_exporter_user", "exporter"),
                          var("redis_admin_user", "admin")}, sorted(users)
    assert " off " in users["default"] + " ", users["default"]
    assert "~firehose:*" in users[var("redis_app_user", "firehose")]
    assert "-@all" in users[var("redis_app_user", "firehose")]


@pytest.mark.disruptive
def test_a_restart_keeps_what_a_script_wrote(host, env_file, redis_cli):
    """Redis replays its AOF after a restart, MULTI/EXEC blocks included: a script that writes twice (as the
    ingester's append does) is one such block, which Redis 7.0 re-checks against the default user's ACL."""
    url = env_file["FIREHOSE_REDIS_URL"]
    keys = ["firehose:test:aof-a", "firehose:test:aof-b"]
    script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1"
    wrote = redis_as(host, url, "EVAL", script, "2", *keys, "kept")
    assert wrote.stdout.strip() == "1", f"the app's user cannot run the script: {wrote.stdout} {wrote.stderr}"
    try:
        restart = host.run("systemctl restart redis-server.service")
        assert restart.rc == 0, restart.stderr + journal(host, "redis-server.service")
        assert poll_until(lambda: redis_as(host, url, "PING").stdout.strip() == "PONG", timeout=60), \
            journal(host, "redis-server.service")
        kept = [redis_cli("GET", key) for key in keys]
        assert kept == ["kept", "kept"], f"after a restart {keys} are {kept}\n{journal(host, 'redis-server.service')}"
    finally:
        redis_cli("DEL", *keys)


def test_exporter_user_reads_metrics_only(host):
    conf = host.file("/etc/default/prometheus-redis-exporter").content_string
    values = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith("#"))
    url = f"redis://{values['REDIS_USER']}:{values['REDIS_PASSWORD']}@127.0.0.1:6379/0"
    assert "redis_version" in redis_as(host, url, "INFO", "server").stdout
    out = redis_as(host, url, "FLUSHALL")
    assert "NOPERM" in out.stdout + out.stderr, out.stdout


def test_secrets_are_the_deployed_ones(host, env_file):
    """The deploy placed the secrets of its environment (tests/host/testhost.sh's dummies)."""
    expected = os.environ.get("FIREHOSE_REDIS_PASSWORD")
    if expected is None:
        pytest.fail("FIREHOSE_REDIS_PASSWORD is not set: run tests/host through tests/host/testhost.sh")
    assert f":{expected}@" in env_file["FIREHOSE_REDIS_URL"]
    conf = host.file("/etc/redis/redis.conf").content_string
    assert expected not in conf, "redis.conf holds the app's password in clear (it must hold its SHA-256 only)"

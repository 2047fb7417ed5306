#!/usr/bin/env bash
# make upgrade-test: an upgrade of the app with data present loses nothing.
#
#   1. a fresh test host (tests/host/testhost.sh up) provisioned by UPGRADE_FROM's own playbook and test inventory
#      (the tree of that commit, from `git archive`, under var/test-host/upgrade-from);
#   2. its simulator feeds it; the ingester and the simulator are stopped, the flush drains the buffer, and the
#      rows per table (and event keys stored twice) up to that moment are counted on the host; a marker is written
#      to Redis by a script (two writes: a MULTI/EXEC block in the AOF, like every append of the ingester);
#   3. this checkout's site.yml is deployed over it (the test inventory of this checkout, the dummy secrets of
#      tests/host/dummy-secrets.sh), which restarts Redis with its new configuration;
#   4. the flush runs again and the count up to the same moment must be identical, with no event stored twice;
#      Redis still holds the marker and the buffer's counters did not go back; `firehose --version` is this
#      checkout's and /health answers 200.
# Commands on the host run as root through sudo (the SSH login is the deploy user, as on a Hetzner server).
# The host is torn down afterwards, also on failure. Needs what `make image-test` needs (root, docs/testhost.md).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${TESTHOST_VENV_BIN:-$REPO/.venv/bin}
FROM=${UPGRADE_FROM:?set UPGRADE_FROM to a commit or tag (make upgrade-test sets the last tag, else 8aaa639)}
STATE=${TESTHOST_DIR:-$REPO/var/test-host}
TESTHOST="$REPO/tests/host/testhost.sh"
# shellcheck source=tests/host/dummy-secrets.sh
. "$REPO/tests/host/dummy-secrets.sh"
OLD="$STATE/upgrade-from"
PROBE=/root/firehose-upgrade-probe.py

log() { printf '[upgrade-test] %s\n' "$*" >&2; }
die() { printf '[upgrade-test] FAILED: %s\n' "$*" >&2; exit 1; }

passed=
cleanup() {
  local rc=$?
  "$TESTHOST" down >&2 || true
  rm -rf "$OLD"
  if [ -n "$passed" ]; then log "passed"; else log "failed (exit $rc)"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
t0=$SECONDS

log "the tree of $FROM ($(git -C "$REPO" rev-parse --short "$FROM^{commit}")) into $OLD"
rm -rf "$OLD"
mkdir -p "$OLD"
git -C "$REPO" archive "$FROM" | tar -x -C "$OLD"

"$TESTHOST" down >/dev/null 2>&1 || true
"$TESTHOST" up
# shellcheck disable=SC1091
. "$STATE/host.env"
# one command line as root on the host (the login shell of the deploy user is bash: %q quoting holds)
on_host() { "$TESTHOST" ssh "sudo sh -c $(printf '%q' "$*")" </dev/null; }

log "provisioning with $FROM's playbooks/site.yml and its test inventory"
mkdir -p "$OLD/.inventory"
cp "$TESTHOST_INVENTORY/hosts.yml" "$OLD/.inventory/hosts.yml"
ln -s "$OLD/inventory/test/group_vars" "$OLD/.inventory/group_vars"
(cd "$OLD" && ANSIBLE_CONFIG="$OLD/ansible.cfg" ANSIBLE_NOCOLOR=1 "$BIN/ansible-playbook" -i "$OLD/.inventory" \
   playbooks/site.yml) >"$STATE/upgrade-from.log" 2>&1 || { tail -40 "$STATE/upgrade-from.log" >&2; die "provisioning $FROM failed (log: $STATE/upgrade-from.log)"; }
old_venv=$(on_host "systemctl show -p ExecStart --value firehose-flush.service" | grep -o 'path=[^ ;]*' | head -1 | cut -d= -f2)
[ -n "$old_venv" ] || die "cannot tell which venv $FROM's flush runs from"
old_python=${old_venv%/*}/python
log "$FROM runs from $old_python"

"$TESTHOST" ssh "sudo tee $PROBE >/dev/null" <"$REPO/tests/validation/probe.py"
# redis-cli -u cannot log in with the old release's redis://:<password>@ URL: its password through REDISCLI_AUTH
# (the dummy one: nothing to URL-decode)
redis_pass=$(on_host "sed -n 's|^FIREHOSE_REDIS_URL=redis://[^:/@]*:\\([^@]*\\)@.*|\\1|p' /etc/firehose/firehose.env")
old_redis() { on_host "${redis_pass:+REDISCLI_AUTH='$redis_pass' }redis-cli $*"; }
data_dir=$(on_host "sed -n 's/^FIREHOSE_DATA_DIR=//p' /etc/firehose/firehose.env")

log "waiting for the simulator's events to reach Redis"
deadline=$((SECONDS + 300))
until [ "$(old_redis XLEN firehose:events || echo 0)" -gt 200 ] 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || die "no events reached Redis in 300 s"
  sleep 2
done
on_host "systemctl stop firehose-simulator.service firehose-ingest.service firehose-flush.timer"
cutoff_us=$(on_host "date +%s%6N")
on_host "systemctl start firehose-flush.service" || die "the flush of $FROM failed"
before=$(on_host "$old_python $PROBE count $data_dir 0 $cutoff_us")
log "before the upgrade: $before"
marker_script="redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1"
[ "$(old_redis "EVAL \"$marker_script\" 2 firehose:upgrade-test:a firehose:upgrade-test:b $cutoff_us")" = 1 ] \
  || die "cannot write the marker to $FROM's Redis"
events_in_before=$(old_redis HGET firehose:cursor events_in)
on_host "systemctl start firehose-flush.timer"

log "deploying this checkout ($(git -C "$REPO" rev-parse --short HEAD)) over it: site.yml"
(cd "$REPO" && ANSIBLE_NOCOLOR=1 "$BIN/ansible-playbook" -i "$TESTHOST_INVENTORY" site.yml) >"$STATE/upgrade-to.log" 2>&1 \
  || { tail -40 "$STATE/upgrade-to.log" >&2; die "deploying this checkout over $FROM failed (log: $STATE/upgrade-to.log)"; }

on_host "systemctl start firehose-flush.service" || die "the flush after the upgrade failed"
after=$(on_host "/opt/firehose/current/venv/bin/python $PROBE count $data_dir 0 $cutoff_us")
log "after the upgrade:  $after"
admin_redis() { on_host "redis-cli --no-auth-warning -u \"\$(cat /etc/redis/admin.url)\" $*"; }
marker=$(admin_redis "MGET firehose:upgrade-test:a firehose:upgrade-test:b" | tr '\n' ' ')
events_in_after=$(admin_redis "HGET firehose:cursor events_in")
log "Redis: marker '$marker', events appended before $events_in_before, after $events_in_after"
[ "$marker" = "$cutoff_us $cutoff_us " ] || die "Redis lost what $FROM wrote (the marker is '$marker'): journalctl -u redis-server"
[ "${events_in_after:-0}" -ge "${events_in_before:-1}" ] || die "the buffer's counter went back: Redis lost data"
admin_redis "DEL firehose:upgrade-test:a firehose:upgrade-test:b" >/dev/null
"$BIN/python" - "$before" "$after" <<'PY' || die "rows up to the upgrade differ (above)"
import json, sys
before, after = (json.loads(a) for a in sys.argv[1:3])
problems = []
if sum(before["rows"].values()) == 0:
    problems.append("nothing was flushed before the upgrade: the test proves nothing")
if after["rows"] != before["rows"]:
    problems.append(f"rows per table before {before['rows']} after {after['rows']}")
if any(after["duplicate_keys"].values()):
    problems.append(f"events stored twice after the upgrade: {after['duplicate_keys']}")
for p in problems:
    print("[upgrade-test]", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
want="firehose $(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/app/pyproject.toml")"
got=$(on_host "/opt/firehose/current/venv/bin/firehose --version")
[ "$got" = "$want" ] || die "the box runs '$got' after the upgrade, not '$want'"
deadline=$((SECONDS + 120))
# (Gunicorn listens on the host's loopback; the proxy in front of it is tests/host's business)
until [ "$(on_host "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8080/health")" = 200 ]; do
  [ $SECONDS -lt $deadline ] || die "/health is not 200 after the upgrade"
  sleep 2
done
log "upgrade from $FROM: every row flushed before is there once, $want runs, /health 200 ($((SECONDS - t0)) s)"
passed=1

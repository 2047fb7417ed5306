# shellcheck shell=bash
# The test host's known dummy secrets, in the environment of every phase (sourced by tests/host/testhost.sh and
# tests/host/upgrade.sh): the bake must not write them into the image (image-check scans for them); the deploy
# places them, and tests/host sees them in effect. A value already in the environment wins.
: "${FIREHOSE_REDIS_PASSWORD:=dummy-redis-app-secret-3f9c1e}"
: "${FIREHOSE_REDIS_EXPORTER_PASSWORD:=dummy-redis-exporter-secret-8b27d4}"
: "${FIREHOSE_REDIS_ADMIN_PASSWORD:=dummy-redis-admin-secret-51a0c9}"
: "${FIREHOSE_API_CURSOR_SECRET:=dummy-cursor-secret-c04e77}"
: "${FIREHOSE_API_KEYS:=dummy-api-key-9d3b21}"
export FIREHOSE_REDIS_PASSWORD FIREHOSE_REDIS_EXPORTER_PASSWORD FIREHOSE_REDIS_ADMIN_PASSWORD \
  FIREHOSE_API_CURSOR_SECRET FIREHOSE_API_KEYS
# shellcheck disable=SC2034  # used by the scripts that source this file
SECRET_VARS=(FIREHOSE_REDIS_PASSWORD FIREHOSE_REDIS_EXPORTER_PASSWORD FIREHOSE_REDIS_ADMIN_PASSWORD
             FIREHOSE_API_CURSOR_SECRET FIREHOSE_API_KEYS)

"""What the tests share: plain helpers (functions, classes, constants), one module a job. Test modules import from
here and never from each other; the conftest.py files build their fixtures on these.

- `paths`: the clone's root (`REPO`) and the golden Jetstream fixture (`GOLDEN`).
- `services`: free loopback ports, waiting on a port or a condition, a redis-server of a test's own, stopping a
  child process for sure.
- `events`: Jetstream events built from the golden fixture (`post_event`, `delete_post`, `account`, `like`,
  `event_of_kind`, `synthetic_events`, `GOLDEN_LINES`).
- `archive`: Parquet `posts` and `identity` partitions as the flush writes them (`post_row`, `write_posts`,
  `bulk_posts`, `write_identity`, `DAY1`..`DAY3`, `us`) and `search_settings` to search them.
- `pipeline`: the CLI stages as subprocesses (`CLI`, `stage_env`, `run_stage`), their settings in process
  (`stage_settings`), appending to the buffer as the ingester does, reading back every table's rows.
- `api_server`: the API under a real Gunicorn (`start_gunicorn`, `Server`, `NOW_US`).
- `wsfeed`: a scripted Jetstream-like websocket peer for the ingester's failure tests.
- `identity_servers`: DNS, HTTPS well-known, PLC and black-hole servers for identity resolution.
- `host`: the test host's inventory and variables, redis-cli there, its journal and status for assertion
  messages, polling it (`poll_until`), the API through its reverse proxy (tests/host).
- `https`: HTTPS to the test host's proxy by address, with SNI and Host naming the proxy's domain.
- `sftp_target`: a private sshd on this machine as the test host's SFTP backup target.
- `webhook`: a receiver for what the test host's Alertmanager posts.
"""

"""All runtime configuration, in one place.

Every setting is an environment variable with a documented default. `Settings.from_env()` reads them once at
start-up and returns an immutable object that is passed explicitly to whatever needs it; nothing else in the
package reads the environment. `docs/configuration.md` is generated from the table below
(`python -m firehose.config --markdown`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firehose.faults import parse_spec

PUBLIC_JETSTREAMS = (
    "wss://jetstream1.us-east.bsky.network/subscribe,"
    "wss://jetstream2.us-east.bsky.network/subscribe,"
    "wss://jetstream1.us-west.bsky.network/subscribe,"
    "wss://jetstream2.us-west.bsky.network/subscribe"
)

PACKAGE_DIR = Path(__file__).resolve().parent
ZSTD_DICTIONARY_PATH = PACKAGE_DIR / "zstd_dictionary_v1"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable and what it accepts."""


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """The appliance's settings. Field defaults are the documented defaults."""

    # Redis buffer
    redis_url: str = _setting("FIREHOSE_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the buffer stream.")
    stream_key: str = _setting("FIREHOSE_STREAM", "firehose:events", "Redis Stream the ingester appends events to.")
    cursor_key: str = _setting(
        "FIREHOSE_CURSOR_KEY", "firehose:cursor", "Redis hash with the resume cursor, written with each batch."
    )
    deadletter_key: str = _setting(
        "FIREHOSE_DEADLETTER_STREAM", "firehose:deadletter", "Redis Stream for frames that are not valid events."
    )
    deadletter_maxlen: int = _setting(
        "FIREHOSE_DEADLETTER_MAXLEN", 100_000, "Approximate cap on the dead-letter stream's length."
    )

    # Ingest
    jetstream_urls: tuple[str, ...] = _setting(
        "FIREHOSE_JETSTREAM_URLS",
        tuple(PUBLIC_JETSTREAMS.split(",")),
        "Comma-separated Jetstream /subscribe URLs, tried in order with failover.",
    )
    wanted_collections: tuple[str, ...] = _setting(
        "FIREHOSE_WANTED_COLLECTIONS", (), "Comma-separated collection NSIDs or prefixes (a.b.*); empty = all."
    )
    compress: bool = _setting("FIREHOSE_COMPRESS", True, "Ask Jetstream for zstd-compressed frames.")
    rewind_seconds: float = _setting(
        "FIREHOSE_REWIND_SECONDS", 5.0, "On restart, resume this many seconds before the stored cursor."
    )
    high_water: int = _setting(
        "FIREHOSE_HIGH_WATER", 20_000_000, "Unflushed events at which the ingester pauses reading (backpressure)."
    )
    max_frame_bytes: int = _setting(
        "FIREHOSE_MAX_FRAME_BYTES", 2_000_000, "Decoded frames larger than this go to the dead-letter stream."
    )
    ingest_batch: int = _setting(
        "FIREHOSE_INGEST_BATCH", 1000, "Events per Redis append (one Lua script call, one stream entry)."
    )
    ingest_batch_ms: int = _setting(
        "FIREHOSE_INGEST_BATCH_MS", 200, "Longest time an event waits in the ingester before it is written."
    )
    backoff_max_seconds: float = _setting(
        "FIREHOSE_BACKOFF_MAX_SECONDS", 60.0, "Upper bound of the reconnect backoff (exponential with jitter)."
    )
    ingest_metrics_port: int = _setting(
        "FIREHOSE_INGEST_METRICS_PORT", 9101, "Port of the ingester's Prometheus endpoint (0 disables it)."
    )
    metrics_bind: str = _setting("FIREHOSE_METRICS_BIND", "127.0.0.1", "Address the ingester metrics listen on.")

    # Flush and storage
    data_dir: Path = _setting("FIREHOSE_DATA_DIR", Path("var/data"), "Root of the Parquet tables.")
    flush_group: str = _setting("FIREHOSE_FLUSH_GROUP", "flush", "Consumer group the flush reads with.")
    flush_consumer: str = _setting("FIREHOSE_FLUSH_CONSUMER", "flush-1", "Consumer name of the flush.")
    flush_chunk: int = _setting(
        "FIREHOSE_FLUSH_CHUNK", 300_000, "Events per flush batch (about; whole ingest batches are never split)."
    )
    flush_trim_keep_seconds: float = _setting(
        "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS",
        120.0,
        "Flushed entries newer than this (relative to the newest entry) stay for the ingester's replay dedupe.",
    )
    parquet_zstd_level: int = _setting(
        "FIREHOSE_PARQUET_ZSTD_LEVEL", 3, "zstd level of the flush's Parquet files (fast; compaction recompresses)."
    )
    compact_zstd_level: int = _setting(
        "FIREHOSE_COMPACT_ZSTD_LEVEL", 9, "zstd level of compacted files (9: ~5% smaller than 3, still fast)."
    )
    parquet_row_group: int = _setting("FIREHOSE_PARQUET_ROW_GROUP", 262_144, "Rows per row group of flush files.")
    compact_row_group: int = _setting(
        "FIREHOSE_COMPACT_ROW_GROUP",
        131_072,
        "Rows per row group of compacted files: search reads a day newest row group first and stops when the "
        "page is full, so smaller groups answer common words sooner (1M-row groups: ~6x slower).",
    )
    flush_metrics_file: Path | None = _setting(
        "FIREHOSE_FLUSH_METRICS_FILE",
        None,
        "node_exporter textfile-collector file for flush metrics (e.g. .../textfile/firehose_flush.prom).",
    )
    index_metrics_file: Path | None = _setting(
        "FIREHOSE_INDEX_METRICS_FILE",
        None,
        "node_exporter textfile-collector file for the full-text index metrics written by `firehose reindex` "
        "(size, days, posts not indexed; e.g. .../textfile/firehose_index.prom).",
    )

    # API
    api_page_size: int = _setting("FIREHOSE_API_PAGE_SIZE", 50, "Results per /search page.")
    api_max_results: int = _setting("FIREHOSE_API_MAX_RESULTS", 1000, "Most /search results over all pages.")
    api_export_max_rows: int = _setting("FIREHOSE_API_EXPORT_MAX_ROWS", 100_000, "Most rows one /export returns.")
    api_query_timeout: float = _setting(
        "FIREHOSE_API_QUERY_TIMEOUT", 20.0, "Seconds a query may run before it is cancelled (504)."
    )
    api_max_text_length: int = _setting("FIREHOSE_API_MAX_TEXT_LENGTH", 512, "Longest accepted search text.")
    api_duckdb_threads: int = _setting("FIREHOSE_API_DUCKDB_THREADS", 2, "DuckDB threads per API worker.")
    api_duckdb_memory: str = _setting("FIREHOSE_API_DUCKDB_MEMORY", "2GB", "DuckDB memory limit per API worker.")
    api_fresh_seconds: float = _setting(
        "FIREHOSE_API_FRESH_SECONDS", 900.0, "/health reports stale data when the newest event is older."
    )
    api_hot_tier: bool = _setting(
        "FIREHOSE_API_HOT_TIER", True, "Serve posts still in the Redis buffer (searchable before the flush)."
    )
    api_hot_refresh_seconds: float = _setting(
        "FIREHOSE_API_HOT_REFRESH_SECONDS", 1.0, "Each API worker reads new buffer entries at most this often."
    )
    api_hot_read_budget_seconds: float = _setting(
        "FIREHOSE_API_HOT_READ_BUDGET_SECONDS", 0.25, "Longest a worker reads new buffer entries per refresh; a "
        "backlog (a catch-up, a fresh worker) is read over several refreshes instead of stalling a request."
    )
    api_hot_max_posts: int = _setting(
        "FIREHOSE_API_HOT_MAX_POSTS", 1_000_000,
        "Most buffered posts an API worker holds (oldest posts dropped past it; deletions and account events kept)."
    )
    api_cursor_secret: str = _setting(
        "FIREHOSE_API_CURSOR_SECRET", "", "HMAC key for page cursors; empty = random per start (set it for >1 host)."
    )
    plc_url: str = _setting(
        "FIREHOSE_PLC_URL", "https://plc.directory", "PLC directory serving did:plc documents; empty = off."
    )
    plc_timeout: float = _setting("FIREHOSE_PLC_TIMEOUT", 2.0, "Seconds to wait for the PLC directory.")
    resolve_handle_url: str = _setting(
        "FIREHOSE_RESOLVE_HANDLE_URL",
        "",
        "Full URL of an XRPC com.atproto.identity.resolveHandle endpoint, asked after DNS and well-known; "
        "empty = off.",
    )
    dns_enabled: bool = _setting("FIREHOSE_DNS_ENABLED", True, "Resolve handles with DNS TXT `_atproto.<handle>`.")
    dns_nameservers: tuple[str, ...] = _setting(
        "FIREHOSE_DNS_NAMESERVERS", (), "Comma-separated ip[:port] ([v6]:port) DNS servers; empty = the system's."
    )
    wellknown_enabled: bool = _setting(
        "FIREHOSE_WELLKNOWN_ENABLED", True, "Resolve handles with `https://<handle>/.well-known/atproto-did`."
    )
    wellknown_host: str = _setting(
        "FIREHOSE_WELLKNOWN_HOST",
        "",
        "Testing: connect handle and did:web HTTPS lookups to this host instead (Host/SNI stay the handle's).",
    )
    wellknown_port: int = _setting("FIREHOSE_WELLKNOWN_PORT", 443, "Port of handle and did:web HTTPS lookups.")
    wellknown_ca_file: Path | None = _setting(
        "FIREHOSE_WELLKNOWN_CA_FILE", None, "Testing: CA bundle for handle and did:web HTTPS; unset = the system's."
    )
    resolve_timeout: float = _setting(
        "FIREHOSE_RESOLVE_TIMEOUT", 2.0, "Longest single DNS, well-known or XRPC call (capped by the request's time)."
    )
    resolve_workers: int = _setting(
        "FIREHOSE_RESOLVE_WORKERS", 32, "Identity lookups running at once per API worker (more wait their turn); "
        "each mostly waits on the network, and a page of 50 new authors needs two answers each within 0.5 s."
    )
    handle_cache_size: int = _setting(
        "FIREHOSE_HANDLE_CACHE_SIZE", 100_000, "Identity entries kept in each worker's in-process front cache."
    )
    handle_cache_seconds: float = _setting(
        "FIREHOSE_HANDLE_CACHE_SECONDS", 3600.0, "How long a verified handle <-> DID pair stays in the Redis cache."
    )
    handle_negative_seconds: float = _setting(
        "FIREHOSE_HANDLE_NEGATIVE_SECONDS", 300.0, "How long 'no verified handle/DID' stays in the Redis cache."
    )
    resolve_retry_seconds: float = _setting(
        "FIREHOSE_RESOLVE_RETRY_SECONDS", 30.0, "After a resolver failed or ran out of time, a worker asks again "
        "about the same name only after this long.",
    )
    api_bind: str = _setting("FIREHOSE_API_BIND", "127.0.0.1:8080", "host:port the API (Gunicorn) listens on.")
    api_workers: int = _setting("FIREHOSE_API_WORKERS", 0, "Gunicorn worker processes; 0 = one per core, at least 2.")
    api_threads: int = _setting("FIREHOSE_API_THREADS", 4, "Threads per Gunicorn worker (gthread; long exports).")
    api_export_timeout: float = _setting(
        "FIREHOSE_API_EXPORT_TIMEOUT", 600.0, "Seconds one /export may stream before it is cut off."
    )
    api_cors_origin: str = _setting(
        "FIREHOSE_API_CORS_ORIGIN", "*", "Access-Control-Allow-Origin sent with every response; empty = none."
    )
    api_trusted_proxies: tuple[str, ...] = _setting(
        "FIREHOSE_API_TRUSTED_PROXIES", ("127.0.0.1", "::1"), "Peers whose X-Forwarded-For names the client (the "
        "reverse proxy); their requests without that header come from the box itself and are not limited.",
    )
    api_rate_per_minute: int = _setting(
        "FIREHOSE_API_RATE_PER_MINUTE", 120, "Requests a minute one client (address, IPv6 /64) may make; 0 = no limit."
    )
    api_rate_burst: int = _setting("FIREHOSE_API_RATE_BURST", 30, "Requests a client may make at once above its rate.")
    api_export_slots: int = _setting(
        "FIREHOSE_API_EXPORT_SLOTS", 2, "Exports running at once for all clients without an API key; 0 = no cap."
    )
    api_exports_per_client: int = _setting(
        "FIREHOSE_API_EXPORTS_PER_CLIENT", 1, "Exports one client without an API key may run at once."
    )
    api_export_retry_seconds: int = _setting(
        "FIREHOSE_API_EXPORT_RETRY_SECONDS", 15, "Retry-After of an export refused because no slot is free."
    )
    api_keys: tuple[str, ...] = _setting(
        "FIREHOSE_API_KEYS", (), "Comma-separated API keys (sent as X-API-Key) with the higher limits below; secret."
    )
    api_key_rate_per_minute: int = _setting(
        "FIREHOSE_API_KEY_RATE_PER_MINUTE", 1200, "Requests a minute per API key; 0 = no limit."
    )
    api_key_export_slots: int = _setting(
        "FIREHOSE_API_KEY_EXPORT_SLOTS", 2, "Exports running at once for clients with a key (a pool of their own)."
    )
    api_export_key_required: bool = _setting(
        "FIREHOSE_API_EXPORT_KEY_REQUIRED", False, "Only clients with an API key may export (403 otherwise)."
    )
    api_metrics_dir: Path | None = _setting(
        "FIREHOSE_API_METRICS_DIR", None, "prometheus multiprocess directory (emptied at start); unset = a temp dir."
    )

    # Testing
    failpoint: str = _setting(
        "FIREHOSE_FAILPOINT",
        "",
        "Testing only: `<name>[:<n>]` SIGKILLs this process at the n-th arrival at the named point (the names: "
        "`firehose.faults.Failpoint`; an unknown name is an error).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `environ` (default: the process environment), falling back to defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = _parse(name, env[name], f.default)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values no stage can work with, naming the variable."""
        positive = (
            "ingest_batch", "ingest_batch_ms", "high_water", "max_frame_bytes", "flush_chunk",
            "parquet_row_group", "compact_row_group", "api_page_size", "api_max_results", "api_export_max_rows",
            "api_max_text_length", "api_duckdb_threads", "api_rate_burst", "api_exports_per_client",
            "api_export_retry_seconds", "api_hot_read_budget_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env_of(name)} must be a positive number, got {getattr(self, name)!r}")
        if not self.jetstream_urls:
            raise ConfigError("FIREHOSE_JETSTREAM_URLS must name at least one ws:// or wss:// URL")
        for url in self.jetstream_urls:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"FIREHOSE_JETSTREAM_URLS: {url!r} is not a ws:// or wss:// URL")
        if self.api_query_timeout <= 0 or self.rewind_seconds < 0:
            raise ConfigError("FIREHOSE_API_QUERY_TIMEOUT must be > 0 and FIREHOSE_REWIND_SECONDS >= 0")
        for name in ("parquet_zstd_level", "compact_zstd_level"):
            if not 1 <= getattr(self, name) <= 22:
                raise ConfigError(f"{_env_of(name)} must be between 1 and 22")
        if self.resolve_timeout <= 0 or self.resolve_workers <= 0 or not 0 < self.wellknown_port < 65536:
            raise ConfigError("FIREHOSE_RESOLVE_TIMEOUT and FIREHOSE_RESOLVE_WORKERS must be > 0 and "
                              "FIREHOSE_WELLKNOWN_PORT a TCP port (1-65535)")
        if min(self.handle_cache_seconds, self.handle_negative_seconds, self.resolve_retry_seconds) < 0:
            raise ConfigError("FIREHOSE_HANDLE_CACHE_SECONDS, FIREHOSE_HANDLE_NEGATIVE_SECONDS and "
                              "FIREHOSE_RESOLVE_RETRY_SECONDS must be >= 0")
        nameservers(self.dns_nameservers)
        for name in ("api_rate_per_minute", "api_key_rate_per_minute", "api_export_slots", "api_key_export_slots"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env_of(name)} must be >= 0 (0 = no limit), got {getattr(self, name)!r}")
        for proxy in self.api_trusted_proxies:
            try:
                ipaddress.ip_address(proxy)
            except ValueError:
                raise ConfigError(f"FIREHOSE_API_TRUSTED_PROXIES: {proxy!r} is not an IP address") from None
        try:
            parse_spec(self.failpoint)
        except ValueError as exc:
            raise ConfigError(f"FIREHOSE_FAILPOINT={self.failpoint!r}: {exc} (leave it unset outside crash tests)") \
                from None


def nameservers(entries: tuple[str, ...]) -> list[tuple[str, int]]:
    """FIREHOSE_DNS_NAMESERVERS entries (`ip`, `ip:port`, `[v6]:port`, `v6`) as (address, port) pairs."""
    pairs = []
    for entry in entries:
        host, port = entry, "53"
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        try:
            address = str(ipaddress.ip_address(host))
            number = int(port)
            if not 0 < number < 65536:
                raise ValueError("port out of range")
        except ValueError as exc:
            raise ConfigError(f"FIREHOSE_DNS_NAMESERVERS: {entry!r} is not ip, ip:port or [ipv6]:port ({exc}); "
                              "give DNS server addresses, not names") from None
        pairs.append((address, number))
    return pairs


def _env_of(field_name: str) -> str:
    return {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}[field_name]


def _parse(name: str, raw: str, default: Any) -> Any:
    """Convert the string `raw` of variable `name` to the type of its default."""
    raw = raw.strip()
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(default, int):
            return int(raw.replace("_", ""))
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path) or (default is None and name.endswith(("_FILE", "_DIR"))):
            return Path(raw) if raw else None
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from exc


def markdown_table() -> str:
    """The settings as a Markdown table, for docs/configuration.md."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default) or "(empty)"
        shown = "(unset)" if default is None else str(default)
        lines.append(f"| `{f.metadata['env']}` | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


DOC_HEADER = """# Configuration

Every setting is an environment variable, read once at start by `firehose.config.Settings.from_env()`.
On the appliance they are templated into `/etc/firehose/firehose.env` by Ansible (`roles/app`). This file is
generated: `make config-doc`.

"""


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        sys.stdout.write(DOC_HEADER + markdown_table())

"""The ingester's frame checks, URL building and backoff (no network needed)."""

from __future__ import annotations

import random

import orjson
import pytest
import zstandard

from firehose.config import ZSTD_DICTIONARY_PATH
from firehose.ingest import BadFrame, FrameDecoder, backoff_delay, subscribe_url
from tests.support.paths import GOLDEN


def compress(data: bytes) -> bytes:
    dictionary = zstandard.ZstdCompressionDict(ZSTD_DICTIONARY_PATH.read_bytes())
    return zstandard.ZstdCompressor(dict_data=dictionary).compress(data)


def test_dictionary_is_jetstream_v1() -> None:
    assert zstandard.ZstdCompressionDict(ZSTD_DICTIONARY_PATH.read_bytes()).dict_id() == 1612007021


@pytest.mark.parametrize("line", GOLDEN.read_bytes().splitlines())
def test_compressed_golden_frames_decode_to_the_same_bytes(line: bytes) -> None:
    event = FrameDecoder(compressed=True, max_frame_bytes=1_000_000).decode(compress(line))
    assert event.raw == line
    assert event.time_us == orjson.loads(line)["time_us"]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"did": "did:plc:x", "time_us": 1, "kind": "gossip"}', "unknown_kind"),
        (b'{"did": "did:plc:x", "time_us": "1", "kind": "identity"}', "bad_time_us"),
        (b'{"did": 7, "time_us": 1, "kind": "identity"}', "bad_did"),
        (b'{"did": "did:plc:x", "time_us": 1, "kind": "commit", "commit": {"operation": "x"}}', "bad_commit"),
        (b'{"did": "did:plc:x", "time_us": 1, "kind": "identity", "pad": "' + b"x" * 2000 + b'"}', "oversized"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(frame: bytes, reason: str) -> None:
    plain = FrameDecoder(compressed=False, max_frame_bytes=1000)
    with pytest.raises(BadFrame) as info:
        plain.decode(frame)
    assert info.value.reason == reason
    with pytest.raises(BadFrame) as info:
        FrameDecoder(compressed=True, max_frame_bytes=1000).decode(compress(frame))
    assert info.value.reason == reason


def test_garbage_that_is_not_zstd_is_a_bad_compression() -> None:
    with pytest.raises(BadFrame) as info:
        FrameDecoder(compressed=True, max_frame_bytes=1000).decode(b"\x00\x01\x02garbage")
    assert info.value.reason == "bad_compression"


def test_subscribe_url_carries_jetstream_parameters() -> None:
    url = subscribe_url("wss://h/subscribe", ["app.bsky.feed.post", "app.bsky.graph.*"], 123, True)
    assert url == ("wss://h/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.%2A"
                   "&cursor=123&compress=true")
    assert subscribe_url("ws://h/subscribe", [], None, False) == "ws://h/subscribe"


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, cap=10, rng=rng) for attempt in range(40)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(delays[:2]) <= 1.0
    assert len({round(d, 6) for d in delays}) > 30

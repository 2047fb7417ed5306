"""A stream entry's events: `events_containing` finds the events holding a marker by searching the whole entry."""

from __future__ import annotations

from firehose.buffer import events_containing, join_events, split_events

EVENTS = [b'{"kind":"commit","c":"like"}', b'{"kind":"commit","c":"post","t":"post post"}', b'{"kind":"identity"}',
          b'{"kind":"commit","c":"like"}', b'{"kind":"account","c":"post"}']


def test_the_events_holding_a_marker_in_entry_order_each_once() -> None:
    blob = join_events(EVENTS)
    assert events_containing(blob, [b'"post"', b'"identity"']) == [EVENTS[1], EVENTS[2], EVENTS[4]]
    assert events_containing(blob, [b'"account"', b'"post"']) == [EVENTS[1], EVENTS[4]]  # the last event too
    assert events_containing(blob, [b'"like"']) == [EVENTS[0], EVENTS[3]]  # the first event too


def test_no_marker_no_event() -> None:
    assert events_containing(join_events(EVENTS), [b'"repost"']) == []
    assert events_containing(b"", [b"x"]) == []


def test_it_agrees_with_splitting_every_event() -> None:
    blob = join_events(EVENTS * 50)
    markers = [b'"post"', b'"identity"']
    assert events_containing(blob, markers) == [e for e in split_events(blob) if any(m in e for m in markers)]

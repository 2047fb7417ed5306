"""Where things are: the clone's root and the golden Jetstream fixture."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Real Jetstream events (MIT, provenance in tests/fixtures/jetstream/README.md), kept inside the clone.
GOLDEN = REPO / "tests" / "fixtures" / "jetstream" / "golden_v1.jsonl"

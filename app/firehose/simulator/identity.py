"""Who the simulated accounts are: the handle of each DID, and what a PLC directory answers about it.

Handles are a pure function of the DID string, so the identity events the generator emits, the PLC directory the
server answers (`GET /plc/<did>`) and any client that resolves a handle agree without shared state.
"""

from __future__ import annotations

import hashlib
from typing import Any

from firehose.simulator.encoding import b32_chars
from firehose.simulator.vocabulary import HANDLE_TLDS, HANDLE_WORDS, NAMES


def handle_for(did: str) -> str:
    """The deterministic handle of a DID (pure function of the DID string, unique in practice)."""
    h = hashlib.blake2b(did.encode(), digest_size=8, person=b"handle").digest()
    name = NAMES[h[0] % len(NAMES)]
    word = HANDLE_WORDS[h[1] % len(HANDLE_WORDS)]
    tld = HANDLE_TLDS[h[2] % len(HANDLE_TLDS)]
    suffix = did[-6:] if did.startswith("did:plc:") else b32_chars(h[3:8])
    return f"{name}{word}{suffix}{tld}"



def plc_document(did: str) -> dict[str, Any] | None:
    """The PLC directory's answer for a simulated `did:plc:` DID (its handle in `alsoKnownAs`); None when `did` is
    not shaped like one the generator makes (24 base32 characters after `did:plc:`)."""
    if not did.startswith("did:plc:") or len(did) != len("did:plc:") + 24 or not did[8:].isalnum():
        return None
    return {"id": did, "alsoKnownAs": [f"at://{handle_for(did)}"], "verificationMethod": [], "service": []}

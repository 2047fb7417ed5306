"""Who the simulated accounts are: the handle of each DID, the DID of each handle, and the PLC directory's answer.

Handles are a pure function of the DID string, and invertible: a `did:plc:` DID's handle carries its 24-character
identifier in the first label (`mariacat-<identifier>.bsky.social`), so `did_for_handle` maps every simulated
handle back to its DID without state. The identity events the generator emits, the PLC directory the server
answers (`GET /plc/<did>`), its handle resolution (DNS `_atproto.<handle>` TXT, `/.well-known/atproto-did`,
`com.atproto.identity.resolveHandle`) and any client all agree without shared state.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from firehose.simulator.encoding import b32_chars
from firehose.simulator.vocabulary import HANDLE_TLDS, HANDLE_WORDS, NAMES

PLC_PREFIX = "did:plc:"
_PLC_ID = re.compile(r"^[a-z2-7]{24}$")
_FIRST_LABEL = re.compile(r"^([a-z]+)-([a-z2-7]{24})$")


def _handle_hash(did: str) -> bytes:
    return hashlib.blake2b(did.encode(), digest_size=8, person=b"handle").digest()


def is_simulated_plc(did: str) -> bool:
    """True when `did` is shaped like the DIDs the generator makes: `did:plc:` + 24 base32 characters."""
    return did.startswith(PLC_PREFIX) and bool(_PLC_ID.match(did[len(PLC_PREFIX):]))


def handle_name(did: str) -> str:
    """The readable part of a DID's handle: a first name and a word (`mariacat`); also its profile's display name."""
    h = _handle_hash(did)
    return NAMES[h[0] % len(NAMES)] + HANDLE_WORDS[h[1] % len(HANDLE_WORDS)]


def handle_for(did: str) -> str:
    """The deterministic handle of a DID, e.g. `mariacat-<the DID's 24-char identifier>.bsky.social` (15% on a
    custom domain). A valid handle (one 38-character label at most, lower-case letters, digits and a hyphen);
    unique, and inverted by `did_for_handle`, for every `did:plc:` DID."""
    h = _handle_hash(did)
    if is_simulated_plc(did):
        identifier = did[len(PLC_PREFIX):]
    else:  # not invertible, but shaped the same
        identifier = b32_chars(hashlib.blake2b(did.encode(), digest_size=24, person=b"handle-id").digest())
    return f"{handle_name(did)}-{identifier}{HANDLE_TLDS[h[2] % len(HANDLE_TLDS)]}"


def did_for_handle(handle: str) -> str | None:
    """The DID whose handle is `handle` (case-insensitive, a trailing dot allowed); None for any other name."""
    handle = handle.strip().rstrip(".").lower()
    first, _, _ = handle.partition(".")
    match = _FIRST_LABEL.match(first)
    if match is None:
        return None
    did = PLC_PREFIX + match.group(2)
    return did if handle_for(did) == handle else None


def plc_document(did: str) -> dict[str, Any] | None:
    """The PLC directory's answer for a simulated `did:plc:` DID (its handle in `alsoKnownAs`); None when `did` is
    not shaped like one the generator makes (24 base32 characters after `did:plc:`)."""
    if not is_simulated_plc(did):
        return None
    return {"id": did, "alsoKnownAs": [f"at://{handle_for(did)}"], "verificationMethod": [], "service": []}

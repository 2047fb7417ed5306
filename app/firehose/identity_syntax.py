"""AT Protocol identifier syntax and the small documents of identity resolution (no network).

- DIDs: `did:<method>:<identifier>` as atproto restricts them (ASCII letters, digits, `._:%-`, not ending in `:`
  or `%`, at most 2048 characters); case-sensitive.
- Handles: hostnames of at least two labels (1-63 characters of a-z, 0-9, `-`, not starting or ending with `-`),
  the last label not starting with a digit, at most 253 characters; case-insensitive, so normalised to lower
  case. Syntactically valid handles under a reserved TLD (`.local`, `.onion`, ...) must never resolve.
- DNS TXT `_atproto.<handle>`: values `did=<DID>`; others are ignored; several different DIDs = no answer.
- `https://<handle>/.well-known/atproto-did`: the DID as plain text (surrounding whitespace allowed).
- DID documents: the handle is the first valid `at://<handle>` entry of `alsoKnownAs`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DID_RE = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-]$")
DID_MAX = 2048
HANDLE_RE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
HANDLE_MAX = 253
DISALLOWED_TLDS = frozenset({"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"})
TXT_PREFIX = "did="


def is_did(value: str) -> bool:
    """True when `value` is syntactically an atproto DID (did:method:identifier)."""
    return len(value) <= DID_MAX and bool(DID_RE.match(value))


def normalise_handle(value: str) -> str | None:
    """A handle as stored and shown (lower case, without a leading '@' or surrounding blanks), or None when
    `value` is not valid handle syntax."""
    handle = value.strip().removeprefix("@").lower()
    if len(handle) > HANDLE_MAX or not handle.isascii() or not HANDLE_RE.match(handle):
        return None
    return handle


def resolvable_handle(handle: str) -> bool:
    """True unless the (normalised) handle is under a TLD that must never resolve (`.local`, `.onion`, ...)."""
    return handle.rsplit(".", 1)[-1] not in DISALLOWED_TLDS


def did_from_txt(values: Iterable[bytes | str]) -> str | None:
    """The DID of `_atproto` TXT record values: the one distinct valid `did=` value, None when there is none or
    when several different DIDs are published (the spec says resolution then fails)."""
    dids = set()
    for value in values:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if text.startswith(TXT_PREFIX):
            did = text[len(TXT_PREFIX):].strip()
            if is_did(did):
                dids.add(did)
    return dids.pop() if len(dids) == 1 else None


def did_from_wellknown(body: bytes) -> str | None:
    """The DID a `/.well-known/atproto-did` response body holds (whitespace stripped), or None."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if is_did(text) else None


def handles_in_document(doc: Any) -> list[str]:
    """Every valid handle a DID document claims (`at://<handle>` entries of `alsoKnownAs`, in order)."""
    aka = doc.get("alsoKnownAs") if isinstance(doc, dict) else None
    found = []
    for entry in aka if isinstance(aka, list) else ():
        if isinstance(entry, str) and entry.startswith("at://"):
            handle = normalise_handle(entry[5:])
            if handle == entry[5:].lower() and handle not in found:
                found.append(handle)
    return found


def handle_from_did_document(doc: Any) -> str | None:
    """The primary handle of a DID document: its first valid `at://` handle, or None."""
    claimed = handles_in_document(doc)
    return claimed[0] if claimed else None


def did_web_host(did: str) -> str | None:
    """The hostname of a hostname-level `did:web` (the only form atproto supports), or None."""
    host = did.removeprefix("did:web:")
    if host == did or len(host) > HANDLE_MAX or not HANDLE_RE.match(host):
        return None
    return host

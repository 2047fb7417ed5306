"""The identifier encodings atproto uses, as the simulator writes them: one-char-per-byte base32 and TIDs."""

from __future__ import annotations

B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_TABLE = bytes.maketrans(bytes(range(256)), bytes(ord(B32[b & 31]) for b in range(256)))
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TID_PAIRS = tuple(a + b for a in TID_ALPHABET for b in TID_ALPHABET)


def b32_chars(data: bytes) -> str:
    """One lowercase base32 character per byte (uniform: 256 is a multiple of 32)."""
    return data.translate(_B32_TABLE).decode("ascii")


def tid(time_us: int, clock_id: int = 0) -> str:
    """An atproto TID (13 chars, base32-sortable) for a time in unix microseconds and a 10-bit clock id."""
    v = ((time_us & ((1 << 53) - 1)) << 10) | (clock_id & 1023)
    p = _TID_PAIRS
    return (p[(v >> 55) & 1023] + p[(v >> 45) & 1023] + p[(v >> 35) & 1023] + p[(v >> 25) & 1023]
            + p[(v >> 15) & 1023] + p[(v >> 5) & 1023] + TID_ALPHABET[v & 31])


def tid_time_us(value: str) -> int:
    """The unix-microsecond time encoded in a TID (inverse of `tid`)."""
    v = 0
    for ch in value:
        v = (v << 5) | TID_ALPHABET.index(ch)
    return v >> 10

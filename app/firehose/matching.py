"""Matching: what a search word matches, defined once for every path (full-text index, hot tier, Parquet scan).

The rules (docs/api.md, "Matching"):

- A post's text is cut into **tokens**: maximal runs of letters, digits and combining marks (Unicode categories
  L, N and M), in any script. Everything else (spaces, punctuation, emoji, `_`, `#`, `@`) separates tokens.
- Tokens are lower-cased (Python's `str.lower`, Unicode-aware: `ПРИВЕТ` -> `привет`; `İ` is kept as is, the only
  character whose lower case is two characters; final `ς` counts as `σ`). There is no stemming and no full case
  folding (`ß` stays `ß`).
- **CJK** (Han, Hiragana, Katakana, Hangul: `CJK_RANGES`) is written without spaces, so a CJK run inside a token
  becomes its overlapping **bigrams** (`東京都` -> `東京`, `京都`); a CJK run of one character is a token of its own.
- A search **word** (the query split on whitespace) is tokenized the same way and matches a post whose tokens
  contain the word's tokens **consecutively**: `cat` matches `Cat!` and `#cat` but not `cats` or `concatenate`;
  `don't` matches `don't` and `don t`; a CJK word of two or more characters matches wherever it occurs as a
  substring of a CJK run (`京都` finds `東京都庁`).
- A trailing `*` on a word that is one token of letters and digits (not CJK) makes it a **prefix** (`cat*` finds
  `cats` and `catalog`); anywhere else `*` is punctuation.
- `exact=true`: the whole text is one phrase: its tokens must occur consecutively (`hello, world` = `hello world`).
- A word without letters or digits (`🦋`, `!!!`) matches nothing it could find: it is ignored, with a warning.

`tokens()` is the only tokenizer. The index stores `tokens(text)` (joined by spaces, split again by tantivy's
whitespace tokenizer, so positions are token positions); the scan paths keep a row when `Needle.found_in` says
so over the same `tokens(text)`. The SQL pre-filter (`Needle.prefilter`) only narrows the candidates: every
token is an RE2 case-insensitive literal of a substring of the original text (a unit test checks RE2 folds each
upper-case character into the lower case this module gives it).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Han (radicals, CJK symbols' iteration marks, unified ideographs and extensions, compatibility), Hiragana,
# Katakana (with phonetic extensions and half-width forms), Hangul (jamo, compatibility jamo, syllables).
CJK_RANGES = (
    (0x1100, 0x11FF), (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B),
    (0x3041, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF), (0xFF66, 0xFFDC), (0x20000, 0x3134F),
)
UNFOLDED = frozenset("\u0130")  # characters whose lower case is longer than one character: kept as they are
PREFIX_MARK = "*"


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)


def _mark_ranges() -> list[tuple[int, int]]:
    """Code point ranges of the combining marks (categories Mn, Mc, Me)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return ranges


# A token run: letters and digits (Python's \w without `_` is exactly categories L and N) and combining marks.
_MARKS = _char_class(_mark_ranges())
_RUN_RE = re.compile(rf"(?:[^\W_]|[{_MARKS}])+")
_ALNUM_RUN_RE = re.compile(r"[^\W_]+")  # the same runs for ASCII text (no marks; three times faster)
_CJK_RE = re.compile(f"[{_char_class(CJK_RANGES)}]+")
_PLAIN_RE = _ALNUM_RUN_RE  # a token that can carry a prefix mark: letters and digits only
_RE2_PUNCTUATION = frozenset(string.punctuation)


def fold(text: str) -> str:
    """The lower case of `text` (`UNFOLDED` characters kept), final sigma as plain sigma (`ΟΔΟΣ` = `οδοσ` = `οδος`)."""
    if "\u0130" not in text:  # the one UNFOLDED character
        return text.lower().replace("\u03c2", "\u03c3")
    return "".join(ch if ch in UNFOLDED else ch.lower() for ch in text).replace("\u03c2", "\u03c3")


def tokens(text: str | None) -> list[str]:
    """The tokens of `text` in order (the module docstring says what they are)."""
    if not text:
        return []
    if text.isascii():
        return _ALNUM_RUN_RE.findall(text.lower())
    runs = _RUN_RE.findall(fold(text))
    if not _CJK_RE.search(text):
        return runs
    out: list[str] = []
    for run in runs:
        pos = 0
        for m in _CJK_RE.finditer(run):
            if m.start() > pos:
                out.append(run[pos:m.start()])
            seg = m.group()
            out.extend([seg] if len(seg) == 1 else [seg[i:i + 2] for i in range(len(seg) - 1)])
            pos = m.end()
        if pos < len(run):
            out.append(run[pos:])
    return out


def re2_literal(text: str) -> str:
    """`text` as an RE2 pattern matching exactly itself (every ASCII punctuation escaped)."""
    return "".join("\\" + ch if ch in _RE2_PUNCTUATION else ch for ch in text)


@dataclass(frozen=True)
class Needle:
    """One search word (or the whole phrase of an exact search) as the tokens it must find consecutively;
    with `prefix`, the (single) token only has to start a token of the post."""

    tokens: tuple[str, ...]
    prefix: bool = False

    def found_in(self, post_tokens: Sequence[str]) -> bool:
        """Whether a post whose text has `post_tokens` matches this needle."""
        want = self.tokens
        if self.prefix:
            return any(t.startswith(want[0]) for t in post_tokens)
        n = len(want)
        if n == 1:
            return want[0] in post_tokens
        first = want[0]
        return any(post_tokens[i] == first and tuple(post_tokens[i:i + n]) == want
                   for i in range(len(post_tokens) - n + 1))

    def prefilter(self) -> list[str]:
        """RE2 patterns the raw text must all match for this needle to be found (a necessary condition)."""
        return ["(?i)" + re2_literal(t) for t in dict.fromkeys(self.tokens)]


def needle(word: str) -> Needle | None:
    """The needle of one search word (or phrase), or None when it has no letters or digits."""
    found = tokens(word)
    if not found:
        return None
    stripped = word.rstrip()
    if (stripped.endswith(PREFIX_MARK) and len(found) == 1 and _PLAIN_RE.fullmatch(found[0])
            and not _CJK_RE.search(found[0])):
        return Needle((found[0],), prefix=True)
    return Needle(tuple(found))


def needles_of(text: str | None, words: Sequence[str], exact: bool) -> tuple[tuple[Needle, ...], list[str]]:
    """The needles of a query (the whole `text` when `exact`, else each of `words`) and the words ignored
    because they have no letters or digits."""
    items = [text] if exact and text else list(words)
    found: dict[Needle, None] = {}
    ignored: list[str] = []
    for item in items:
        n = needle(item)
        if n is None:
            ignored.append(item)
        else:
            found[n] = None
    return tuple(found), ignored


def matches(needles: Sequence[Needle], text: str | None) -> bool:
    """Whether `text` matches every needle (the scan paths' final check)."""
    if not needles:
        return True
    post = tokens(text)
    return all(n.found_in(post) for n in needles)


def index_text(text: str | None) -> str:
    """What the full-text index stores for `text`: its tokens separated by spaces (tantivy's whitespace tokenizer
    splits them back, token positions included)."""
    return " ".join(tokens(text))

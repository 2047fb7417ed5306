"""The real profile's texts: per-language Zipf vocabularies in the 2026 language shares, and posts made of them.

- **Vocabulary.** Every language has a list of words by rank: its common words first (the seed profile's lists of
  `firehose.simulator.vocabulary`, plus short lists for Italian, Dutch, Polish, Turkish and Thai), then pseudo-words
  built from the language's letters and syllables (Latin with each language's diacritics, Cyrillic, Arabic, Thai;
  kana and kanji for Japanese, hanzi for Chinese, Hangul syllables for Korean), shorter ones first, `size` words in
  all (60,000 for English). The word of rank r (0-based) is drawn with probability about 1 / ((r + 1) ln n)
  (Zipf's law, exponent 1: `words[int((n + 1) ** u) - 1]` for u uniform), so "the" is ~6% of English words and
  most of the list is rare; numbers, link ids and mentions add an unbounded tail of new tokens.
- **Scripts.** Japanese and Chinese are written without spaces (CJK runs: the project matches them by 2+ character
  substrings), Thai without spaces between words (its runs are single tokens for the project's tokenizer), the
  others with spaces; sentences end in the script's punctuation, Latin and Cyrillic ones often start upper-case.
- **Posts.** Mentions with facets, the searchable strings of `firehose.simulator.vocabulary` at their rates, words,
  numbers, English words inside other languages, links with facets (display text shortened as the app does),
  hashtags with facets, emoji (skin tones, ZWJ sequences, flags), line breaks; alt text on images.
- **Exactness of the searchable strings.** No generated word, tag or domain contains one of `SPECIALS` (filtered
  as the lists are built; a unit test checks the lists), and no CJK pool holds a character of `CJK_WORD`, so
  `珈琲` cannot arise from two neighbouring words.

Each list is built once per process when first used (`language(code)`; about 0.4 CPU-s for English, 2 s for all)
from fixed seeds, the same on every machine; which words a post uses is drawn from the generator's block PRNG like
everything else.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firehose.simulator.identity import handle_for
from firehose.simulator.records import Population, PostText, draw_specials
from firehose.simulator.vocabulary import (
    CJK_WORD,
    EMOJI,
    EMOJI_RATE,
    TAG,
    TAG_RATE,
    TAGS,
    WORDS,
    has_special,
    vocabulary_shares,
)

REAL_LANGUAGES: tuple[tuple[str | None, float], ...] = (
    ("en", 0.535), ("ja", 0.13), ("pt", 0.10), ("de", 0.04), ("es", 0.04), ("fr", 0.025), ("ko", 0.015),
    ("it", 0.01), ("nl", 0.01), ("zh", 0.01), ("pl", 0.005), ("tr", 0.005), ("ru", 0.005), ("uk", 0.005),
    ("ar", 0.003), ("th", 0.002), ("emoji", 0.02), (None, 0.04),
)
"""Share of posts per language code in the real profile (None: no `langs`; "emoji": emoji only, langs `en`). An
estimate: docs/simulator.md says what it rests on."""

REAL_VOCABULARY = vocabulary_shares(REAL_LANGUAGES)
"""The searchable strings' expected shares of posts in the real profile."""

NUMBER_SHARE = 0.02
"""Share of a post's word slots that are numbers (1 to ~20,000)."""
ENGLISH_SHARE = 0.04
"""Share of the word slots of a non-English post that are English words."""
SENTENCE_END = 0.12
"""Chance that a sentence ends after a word."""
WORDS_ROOM = 240
"""Characters the words of a post may fill; the searchable strings come after (at most 38 more)."""
ROOM = 285
"""Characters before a link or a hashtag; the rest is kept for `#TAG` and `EMOJI` (so a post stays <= 300)."""


@dataclass(frozen=True)
class Language:
    """One language's vocabulary by rank and how its text is written."""

    code: str
    words: tuple[str, ...]
    nbytes: tuple[int, ...]  # UTF-8 length of each word
    sep: str  # between words: " " or "" (Japanese, Chinese, Thai)
    cased: bool  # sentences may start upper-case (Latin and Cyrillic scripts)
    ends: tuple[str, ...]  # sentence endings, the first the most common

    @property
    def zipf_base(self) -> float:
        """`len(words) + 1`: the word of rank `int(zipf_base ** u) - 1` is Zipf-distributed for u uniform."""
        return len(self.words) + 1.0


# ---------------------------------------------------------------------------------------------------------------
# Building the word lists
# ---------------------------------------------------------------------------------------------------------------

_SYLLABLES: dict[str, tuple[str, str, str, int]] = {
    # code: (onsets, nuclei, codas, size) of the languages written in syllables of letters; "-" is no onset
    "en": ("b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sm sn sp st "
           "str sw th tr tw wh wr - -", "a e i o u a e i o ai ea ee oo ou ow ay ie oa y",
           "n r s t d l m ng ck nd nt st rt sh th x ll ss", 50_000),
    "pt": ("b c d f g j l m n p r s t v ch lh nh br cr dr fr gr pr tr qu gu -", "a e i o u a e o ã õ é á ó í ê ão "
           "ei ou ai", "s r l m ns", 30_000),
    "de": ("b d f g h j k l m n p r s t w z sch st sp br fr gr kr pr tr schw pf kl bl -", "a e i o u e ä ö ü ei au "
           "ie eu", "n r s t ch ck ng nd st ß lt rt nn ll", 25_000),
    "es": ("b c d f g j l m n p r s t v ll ñ ch br cr dr fr gr pl pr tr qu -", "a e i o u a e o á é í ó ue ie ia",
           "s n r l z d", 25_000),
    "fr": ("b c d f g j l m n p r s t v ch br cr dr fr gr pl pr tr qu -", "a e i o u é è ê ai au eau ou oi",
           "s t r x nt rs", 20_000),
    "it": ("b c d f g l m n p r s t v z ch gh gl br cr pr tr sp st -", "a e i o u a o à è ò io ia", "n r l",
           10_000),
    "nl": ("b d f g h j k l m n p r s t v w z sch br dr gr kl kr pr st tr -", "a e i o u aa ee oo ij ui ou ie",
           "n r s t k l d nd rt ng", 10_000),
    "pl": ("b c d g j k l m n p r s t w z cz sz rz dz ł ś ż prz trz kr -", "a e i o u y ą ę ó ie", "ć ń k t j ł m",
           5_000),
    "tr": ("b c ç d f g ğ h k l m n p r s ş t v y z -", "a e ı i o ö u ü", "r n k l m z", 5_000),
    "ru": ("б в г д ж з к л м н п р с т ф х ц ч ш щ бр вр гр др кр пр ст тр ск сл -", "а е и о у ы я ю э",
           "н р с т л к й м в ть", 8_000),
    "uk": ("б в г д ж з к л м н п р с т ф х ц ч ш щ бр вр гр др кр пр ст тр ск сл -", "а е и і ї о у я ю є",
           "н р с т л к й м в ть", 5_000),
}


def _split(text: str) -> list[str]:
    """The whitespace-separated words of `text`."""
    return text.split()


_TOP: dict[str, list[str]] = {
    **{code: words for code, (words, _) in WORDS.items() if code != "emoji"},
    "it": _split("il la di e che è un una per non in con mi ma sono ho ti lo se come anche più questo oggi grazie ciao "
          "bene tutto"),
    "nl": _split("de het een en van ik je is dat niet op te met voor zijn maar ook wat er nog dit heb wel goed dag"),
    "pl": _split("i w nie się na to że z jest do a jak ale co tak mi już o po jestem dzień dobry dzięki bardzo"),
    "tr": _split("bir ve bu da de ne çok için ben sen ama gibi daha var yok mı mi iyi güzel teşekkürler bugün"),
    "th": _split("ที่ และ ของ ใน มี ไม่ เป็น จะ ได้ ให้ คน ว่า กับ นี้ ก็ วันนี้ ขอบคุณ สวัสดี"),
}
_HIRAGANA = ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわん"
             "がぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽ")
_KATAKANA = ("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
             "ガギグゲゴザジズゼゾダデドバビブベボパピプペポ")
_ARABIC = "بتثجحخدذرزسشصضطظعغفقكلمنهوي"
_THAI_CONSONANTS = "กขคงจฉชซดตถทนบปผพฟมยรลวสหอ"
_HANGUL_FINALS = (0, 0, 0, 0, 4, 8, 16, 21, 1, 17, 19)
_KO_PARTICLES = ("은", "는", "이", "가", "을", "를", "에", "도", "")


def _finish(top: list[str], generated: dict[str, None], size: int) -> list[str]:
    """The top words, then the generated ones shortest first (frequent words are short), `size` in all."""
    seen = set(top)
    rest = sorted((w for w in generated if w not in seen), key=len)  # stable: generation order within a length
    return [*top, *rest][:size]


def _syllable_words(code: str, rng: random.Random) -> list[str]:
    """`size` words of 1-4 syllables (42/23/19/16%), 35% of syllables closed by a coda."""
    onset_list, nucleus_list, coda_list, size = _SYLLABLES[code]
    onsets = [o.replace("-", "") for o in onset_list.split()]
    nuclei, codas = nucleus_list.split(), coda_list.split()
    open_syllables = [o + n for o in onsets for n in nuclei]
    closed = [s + c for s in open_syllables for c in codas]
    syllables = open_syllables + closed
    weights = [0.65 / len(open_syllables)] * len(open_syllables) + [0.35 / len(closed)] * len(closed)
    cumulative = list(itertools.accumulate(weights))
    generated: dict[str, None] = {}
    while len(generated) < size:
        lengths = rng.choices((1, 2, 3, 4), cum_weights=(42, 65, 84, 100), k=size)
        pool = rng.choices(syllables, cum_weights=cumulative, k=sum(lengths))
        pos = 0
        for length in lengths:
            word = "".join(pool[pos:pos + length])
            pos += length
            if len(word) > 1 and word not in generated and not has_special(word):
                generated[word.capitalize() if code == "de" and length > 1 and pos % 3 == 0 else word] = None
    return _finish(_TOP[code], generated, size)


def _kanji_pool(rng: random.Random, count: int) -> list[str]:
    """`count` distinct CJK unified ideographs, never a character of `CJK_WORD`."""
    return [chr(cp) for cp in rng.sample(range(0x4E00, 0x9FA6), count) if chr(cp) not in CJK_WORD]


def _japanese_words(rng: random.Random, size: int) -> list[str]:
    kanji = _kanji_pool(rng, 2500)
    generated: dict[str, None] = {}
    while len(generated) < size:
        u = rng.random()
        if u < 0.35:
            word = "".join(rng.choice(kanji) for _ in range(1 + (rng.random() < 0.85) + (rng.random() < 0.1)))
        elif u < 0.60:
            word = "".join(rng.choice(_KATAKANA) + ("ー" if rng.random() < 0.15 else "")
                           for _ in range(2 + int(rng.random() * 4)))
        elif u < 0.85:
            word = "".join(rng.choice(_HIRAGANA) for _ in range(2 + int(rng.random() * 3)))
        else:
            word = rng.choice(kanji) + "".join(rng.choice(_HIRAGANA) for _ in range(1 + (rng.random() < 0.5)))
        generated[word] = None
    return _finish(_TOP["ja"], generated, size)


def _chinese_words(rng: random.Random, size: int) -> list[str]:
    hanzi = _kanji_pool(rng, 3000)
    lengths = [1 + (rng.random() < 0.8) + (rng.random() < 0.15) for _ in range(size + size // 5)]
    generated = dict.fromkeys("".join(rng.choice(hanzi) for _ in range(length)) for length in lengths)
    return _finish(_TOP["zh"], generated, size)


def _korean_words(rng: random.Random, size: int) -> list[str]:
    generated: dict[str, None] = {}
    while len(generated) < size:
        word = "".join(chr(0xAC00 + (rng.randrange(19) * 21 + rng.randrange(21)) * 28 + rng.choice(_HANGUL_FINALS))
                       for _ in range(1 + int(rng.random() ** 1.3 * 3)))
        generated[word + rng.choice(_KO_PARTICLES)] = None
    return _finish(_TOP["ko"], generated, size)


def _arabic_words(rng: random.Random, size: int) -> list[str]:
    generated: dict[str, None] = {}
    while len(generated) < size:
        letters = [rng.choice(_ARABIC) for _ in range(3 + int(rng.random() * 3))]
        if rng.random() < 0.5:
            letters.insert(1 + int(rng.random() * (len(letters) - 1)), rng.choice("اوي"))
        generated[("ال" if rng.random() < 0.3 else "") + "".join(letters)] = None
    return _finish(_TOP["ar"], generated, size)


def _thai_words(rng: random.Random, size: int) -> list[str]:
    generated: dict[str, None] = {}
    while len(generated) < size:
        syllables = []
        for _ in range(1 + int(rng.random() * 3)):
            lead = rng.choice("เแโไ") if rng.random() < 0.25 else ""
            follow = rng.choice("าิีุูะ") if rng.random() < 0.5 else ""
            final = rng.choice("นมงกดบยว") if rng.random() < 0.3 else ""
            syllables.append(lead + rng.choice(_THAI_CONSONANTS) + follow + final)
        generated["".join(syllables)] = None
    return _finish(_TOP["th"], generated, size)


_EMOJI_BY_POPULARITY = _split(
    "😂 ❤️ 🥺 😭 ✨ 🔥 🙏 😍 🥰 💀 👀 🎉 💙 🦋 😊 🤔 👍 🙌 💯 🌸 🌈 😅 🤣 🫶 😎 🥳 💜 🖤 🤍 🌊 🍂 ❄️ 🚀 "
    "🥹 🫠 😮‍💨 ❤️‍🔥 🏳️‍🌈 🏳️‍⚧️ 🧑‍💻 👍🏻 👋🏽 🙏🏾 💪🏼 👏 😢 😡 🤬 🙃 😉 😘 😴 🤗 🤯 😳 🥲 😬 🙄 🤡 👻 💕 💖 💗 💔 "
    "♥️ 💚 💛 🧡 ⭐ 🌟 ☀️ 🌙 🌧️ ⚡ 🍕 🍰 🍺 🍷 🍜 🍣 🎶 🎵 🎮 🎨 📸 📚 📰 🐈 🐕 🐈‍⬛ 🐱 🐶 🦊 🐻 🐸 🐢 🌻 🌷 🌹 🍀 "
    "🇧🇷 🇯🇵 🇺🇸 🇩🇪 🇫🇷 🇪🇸 🇰🇷 🇺🇦 🇵🇸 🇬🇧 🇨🇦 🇲🇽 ⚽ 🏀 🎄 🎃 💩 🤝 ✌️ 🤞 👉 👇 ⬇️ ✅ ❌ ⚠️ 📌 🔗 🧵 👇🏻"
)
_REAL_TAGS = (
    "art", "artsky", "bookstodon", "booksky", "caturday", "dogsofbluesky", "catsofbluesky", "illustration",
    "digitalart", "furryart", "vtuber", "gamedev", "indiedev", "screenshotsaturday", "news", "politics", "uspol",
    "brasil", "science", "climate", "music", "nowplaying", "writing", "writingcommunity", "poetry", "ttrpg",
    "dnd", "anime", "manga", "fanart", "pokemon", "blacksky", "academicsky", "histodons", "birds", "nature",
    "gardening", "football", "nfl", "nba", "f1", "wrestling", "tech", "ai", "linux", "opensource", "python",
    "イラスト", "絵描きさんと繋がりたい", "ポケモン", "原神", "猫", "一次創作", "futebol", "bolsonaro", "lula",
)
_REAL_DOMAINS = (
    "www.youtube.com", "youtu.be", "bsky.app", "www.nytimes.com", "www.theguardian.com", "substack.com",
    "www.washingtonpost.com", "apnews.com", "www.reuters.com", "www.bbc.co.uk", "www.cnn.com", "github.com",
    "en.wikipedia.org", "open.spotify.com", "www.twitch.tv", "www.instagram.com", "www.tiktok.com", "ko-fi.com",
    "www.patreon.com", "www.nbcnews.com", "www.theatlantic.com", "www.theverge.com", "www.404media.co",
    "www.npr.org", "www.politico.com", "www.bloomberg.com", "www.aljazeera.com", "www.independent.co.uk",
    "www.rawstory.com", "www.huffpost.com", "www.msn.com", "news.yahoo.co.jp", "www3.nhk.or.jp", "www.pixiv.net",
    "www.nicovideo.jp", "g1.globo.com", "www1.folha.uol.com.br", "www.uol.com.br", "www.spiegel.de",
    "www.zeit.de", "www.tagesschau.de", "www.lemonde.fr", "elpais.com", "www.amazon.com", "amzn.to",
    "www.etsy.com", "bandcamp.com", "www.tumblr.com", "medium.com", "arxiv.org", "www.nature.com",
    "store.steampowered.com", "www.reddit.com", "x.com", "linktr.ee", "bit.ly", "www.flickr.com",
    "archive.org", "www.kickstarter.com", "itch.io",
)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_BUILDERS: dict[str, tuple[Callable[[random.Random, int], list[str]], int]] = {
    "ja": (_japanese_words, 30_000), "zh": (_chinese_words, 10_000), "ko": (_korean_words, 15_000),
    "ar": (_arabic_words, 5_000), "th": (_thai_words, 5_000),
}
LANGUAGE_CODES = (*_SYLLABLES, *_BUILDERS, "emoji")
"""Every language `language()` knows."""


@functools.cache
def language(code: str) -> Language:
    """A language's vocabulary and writing (built on first use, from a fixed seed: the same in every process)."""
    rng = random.Random(f"lexicon-{code}")
    if code == "emoji":
        words = [e for e in _EMOJI_BY_POPULARITY if not has_special(e)]
    elif code in _SYLLABLES:
        words = _syllable_words(code, rng)
    else:
        build, size = _BUILDERS[code]
        words = build(rng, size)
    ends = {"ja": ("。", "！", "w", "…"), "zh": ("。", "！", "？"), "th": (" ", " ", "!"), "ar": (".", "!", "؟"),
            "emoji": ("",)}.get(code, (".", "!", "?", "...", ","))
    return Language(code, tuple(words), tuple(len(w.encode()) for w in words),
                    "" if code in ("ja", "zh", "th", "emoji") else " ", code in _SYLLABLES, ends)


@functools.cache
def hashtags() -> tuple[str, ...]:
    """The hashtags posts use, by rank: common real ones, then English words and pairs of words."""
    english = language("en").words
    tags = [*_REAL_TAGS, *TAGS, *english[300:2300],
            *(a.capitalize() + b.capitalize() for a, b in zip(english[200:700], english[900:1400], strict=True))]
    return tuple(dict.fromkeys(t for t in tags if t.isalnum() and not has_special(t)))


DOMAINS = tuple(d for d in _REAL_DOMAINS if not has_special(d))
"""The hosts of links, by rank."""


# ---------------------------------------------------------------------------------------------------------------
# The text model
# ---------------------------------------------------------------------------------------------------------------


class RealText:
    """The real profile's texts (`firehose.simulator.records.TextModel`)."""

    languages = REAL_LANGUAGES

    def __init__(self, population: Population) -> None:
        self._popular_did = population.popular_did
        self._domains_base = len(DOMAINS) + 1.0

    def _language(self, lang: str) -> Language:
        return language(lang if lang in LANGUAGE_CODES else "en")

    def words(self, rng: random.Random, lang: str, n: int) -> str:
        written = self._language("en" if lang == "emoji" else lang)
        words, base, rand = written.words, written.zipf_base, rng.random
        return written.sep.join([words[int(base ** rand()) - 1] for _ in range(n)])

    def alt_text(self, rng: random.Random, lang: str) -> str:
        if rng.random() >= 0.35:
            return ""
        written = self._language("en" if lang == "emoji" else lang)
        return self.words(rng, lang, 3 + int(40 * rng.random() ** 2)) + written.ends[0].strip()

    def emoji(self, rng: random.Random) -> str:
        emoji = language("emoji")
        return emoji.words[int(emoji.zipf_base ** rng.random()) - 1]

    def domain(self, rng: random.Random) -> str:
        return DOMAINS[int(self._domains_base ** rng.random()) - 1]

    def _link(self, rng: random.Random, lang: str) -> str:
        """A URL as posts carry them: a video, a post, an article with a date and a slug, or a page."""
        domain = self.domain(rng)
        ident = "".join(rng.choice(_BASE62) for _ in range(11))
        if domain == "www.youtube.com":
            return f"https://{domain}/watch?v={ident}"
        if domain == "youtu.be":
            return f"https://{domain}/{ident}?si={ident[::-1]}"
        if domain == "bsky.app":
            return f"https://bsky.app/profile/{handle_for(self._popular_did(rng))}/post/{ident.lower()[:13]}"
        slug = self.words(rng, "en", 2 + int(rng.random() * 6)).lower().replace(" ", "-").replace("'", "")
        if rng.random() < 0.4:
            return f"https://{domain}/2026/{1 + int(rng.random() * 12):02d}/{1 + int(rng.random() * 28):02d}/{slug}"
        return f"https://{domain}/{slug}" + (f"-{ident}" if rng.random() < 0.3 else "")

    def post_text(self, rng: random.Random, lang: str, *, allow_empty: bool) -> tuple[str, list[dict[str, Any]]]:
        rand = rng.random
        if allow_empty and rand() < 0.15:
            return "", []
        written = self._language(lang)
        emoji_only = lang == "emoji"
        target = 1 + int(rand() * 12) if emoji_only else 6 + int(274 * rand() ** 2.2)
        if not written.sep:
            target = target * 9 // 20  # CJK scripts say as much in fewer characters
        built = PostText()
        sep = written.sep
        after_spaced = False  # the last piece was a Latin or Cyrillic word, a number or a feature

        def add(piece: str, blen: int, feature: dict[str, Any] | None = None, spaced: bool = False) -> None:
            nonlocal after_spaced
            built.add(piece, blen, feature, " " if feature is not None or spaced or after_spaced else sep)
            after_spaced = feature is not None or spaced

        built.add_mentions(rng, self._popular_did)
        after_spaced = bool(built.pieces)  # the mentions, if any
        # spaced: a Latin or Cyrillic string keeps spaces around it in every script (CJK_WORD joins its run)
        specials = [(text, blen, text != CJK_WORD) for text, blen in draw_specials(rng, lang)]
        insert_at = int(rand() * 8)
        words, wbytes, base = written.words, written.nbytes, written.zipf_base
        english = language("en")
        mixed = ENGLISH_SHARE if lang != "en" and not emoji_only else 0.0
        numbers = 0.0 if emoji_only else NUMBER_SHARE
        capital = written.cased and rand() < 0.6
        sentence_start = True
        count = 0
        while built.nchars < target:
            if count == insert_at and specials:
                for text, blen, spaced in specials:
                    add(text, blen, spaced=spaced)
                specials = []
                sentence_start = False
            u = rand()
            spaced = False
            if u < numbers:
                word = str(int(10 ** (rand() * 4.3)))
                blen, spaced = len(word), True
            elif u < numbers + mixed:
                r = int(english.zipf_base ** rand()) - 1
                word, blen, spaced = english.words[r], english.nbytes[r], True
            else:
                r = int(base ** rand()) - 1
                word, blen = words[r], wbytes[r]
            if sentence_start and capital:
                word = word[:1].upper() + word[1:]
                blen = len(word.encode())
            if built.nchars + len(word) + 1 > WORDS_ROOM:
                break
            add(word, blen, spaced=spaced)
            count += 1
            sentence_start = False
            if rand() < SENTENCE_END and not emoji_only:
                end = written.ends[0] if rand() < 0.6 else rng.choice(written.ends)
                if rand() < 0.05:
                    end += "\n\n"
                built.pieces.append(end)
                built.nbytes += len(end.encode())
                built.nchars += len(end)
                sentence_start = True
        for text, blen, spaced in specials:
            add(text, blen, spaced=spaced)
        if rand() < 0.10:
            uri = self._link(rng, lang)
            shown = uri[8:] if len(uri) < 40 else uri[8:33] + "..."
            if built.nchars + len(shown) < ROOM:
                add(shown, len(shown.encode()), {"$type": "app.bsky.richtext.facet#link", "uri": uri})
        tags: list[str] = []
        if rand() < 0.08:
            pool = hashtags()
            tags = [pool[int((len(pool) + 1.0) ** rand()) - 1] for _ in range(1 + int(rand() * 3))]
        if rand() < TAG_RATE:
            tags.append(TAG)
        for tag in dict.fromkeys(tags):
            if built.nchars + len(tag) + 1 < ROOM or tag == TAG:
                add("#" + tag, len(tag.encode()) + 1, {"$type": "app.bsky.richtext.facet#tag", "tag": tag})
        if rand() < EMOJI_RATE:
            add(EMOJI, 3)
        elif rand() < 0.20:
            emoji = self.emoji(rng) * (1 + int(rand() ** 4 * 3))
            if built.nchars + len(emoji) < 300:
                add(emoji, len(emoji.encode()))
        return built.done()

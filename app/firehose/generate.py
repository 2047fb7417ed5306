"""Deterministic, indexable generator of realistic Jetstream v1 events.

`EventGenerator(seed, start_us, profile)` defines an endless event sequence: event number `i` (0, 1, 2, ...) is a
pure function of `(seed, i)` and of the constructor arguments, so `event_json(i)` returns the same bytes every time,
on every machine, in any order of calls. That is what makes cursor replay in the simulator exact.

Shape: each event is a dict laid out like `tests/fixtures/jetstream/golden_v1.jsonl` (top-level `did`, `time_us`,
`kind`; `commit` = `{rev, operation, collection, rkey, record, cid}` without `record`/`cid` for deletes;
`identity` = `{did, handle, seq, time}`; `account` = `{active, did, seq, time, status?}`); record keys are sorted as
Jetstream sorts them.

Mix (exact in every window of 1000 events, the order shuffled): likes 60%, posts 11.5%, reposts 8.5%, follows 8%,
blocks 1%, profile writes 1%, deletes 5% (spread over collections), identity 1%, account 1%, other collections 3%
(threadgates, postgates, list items, chat declarations, place.stream.*, fyi.unravel.*, sh.tangled.*, ...).

Time: event `i` has a base time `base_us(i)` from the rate `Profile` (constant, or a diurnal sine with peak/trough
1.6 across calendar days); base times never decrease. The event's `time_us` is its base time minus a jitter in
`[0, jitter_us)`, so events arrive slightly out of time order, as they do from Jetstream. Guarantee used by cursors:
every event with `time_us >= C` has an index `>= index_at_or_after(C)`; replaying from that index therefore delivers
every event at or after `C`, plus possibly a few whose `time_us` lies in `[C - jitter_us, C)`.

Searchable vocabulary with known frequencies (shares of posts) is in `VOCABULARY`; see `docs/simulator.md`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

# ---------------------------------------------------------------------------------------------------------------
# Public constants: the searchable vocabulary (validation harness and tests search for these)
# ---------------------------------------------------------------------------------------------------------------

COMMON_WORD = "coffee"
"""Injected into 4% of posts (a fifth of them capitalised "Coffee"); appears nowhere else."""
RARE_WORD = "axolotl"
"""Injected into 0.01% of posts (about 1 post in 10,000)."""
PHRASE = "good morning bluesky"
"""Injected verbatim into 0.5% of posts; "good" and "morning" also occur on their own."""
TAG = "photography"
"""Hashtag `#photography` with a `#tag` facet in 1% of posts."""
CJK_WORD = "珈琲"
"""In 10% of Japanese and Chinese posts (1.6% of all posts)."""
CYRILLIC_WORD = "кофе"
"""In 10% of Russian and Ukrainian posts (0.3% of all posts)."""
EMOJI = "☕"
"""In 1% of posts."""

COMMON_WORD_RATE = 0.04
RARE_WORD_RATE = 0.0001
PHRASE_RATE = 0.005
TAG_RATE = 0.01
EMOJI_RATE = 0.01
LOCAL_WORD_RATE = 0.10

# Share of posts per language code (None = no `langs` field).
LANGUAGES: tuple[tuple[str | None, float], ...] = (
    ("en", 0.50), ("ja", 0.14), ("pt", 0.08), ("es", 0.05), ("de", 0.04), ("fr", 0.03), ("ko", 0.03),
    ("zh", 0.02), ("ru", 0.02), ("uk", 0.01), ("ar", 0.01), ("emoji", 0.02), (None, 0.05),
)
_LANG_SHARE = dict(LANGUAGES)

VOCABULARY: dict[str, float] = {
    COMMON_WORD: COMMON_WORD_RATE,
    RARE_WORD: RARE_WORD_RATE,
    PHRASE: PHRASE_RATE,
    f"#{TAG}": TAG_RATE,
    CJK_WORD: LOCAL_WORD_RATE * (_LANG_SHARE["ja"] + _LANG_SHARE["zh"]),
    CYRILLIC_WORD: LOCAL_WORD_RATE * (_LANG_SHARE["ru"] + _LANG_SHARE["uk"]),
    EMOJI: EMOJI_RATE,
}
"""Searchable strings -> expected share of posts containing them (independent draws per post)."""

EVENTS_PER_DAY = 8_100_000
"""The seed documents' daily volume; `Profile()` defaults to it (93.75 events per simulated second)."""

DEFAULT_START_US = 1_779_667_200_000_000  # 2026-05-25T00:00:00Z, the golden file's day
SEQ_BASE = 30_000_000_000
WINDOW = 1000
"""The kind mix is exact in every aligned window of this many events."""

# ---------------------------------------------------------------------------------------------------------------
# Kinds and the mix
# ---------------------------------------------------------------------------------------------------------------

LIKE, POST, REPOST, FOLLOW, BLOCK = "app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.feed.repost", \
    "app.bsky.graph.follow", "app.bsky.graph.block"
PROFILE = "app.bsky.actor.profile"


class Kind(NamedTuple):
    """One entry of the mix: event kind, collection and operation (None for identity/account)."""

    kind: str
    collection: str | None
    operation: str | None
    per_mille: int


MIX: tuple[Kind, ...] = (
    Kind("commit", LIKE, "create", 600),
    Kind("commit", POST, "create", 115),
    Kind("commit", REPOST, "create", 85),
    Kind("commit", FOLLOW, "create", 80),
    Kind("commit", BLOCK, "create", 10),
    Kind("commit", PROFILE, "update", 9),
    Kind("commit", PROFILE, "create", 1),
    Kind("commit", LIKE, "delete", 25),
    Kind("commit", POST, "delete", 8),
    Kind("commit", REPOST, "delete", 6),
    Kind("commit", FOLLOW, "delete", 8),
    Kind("commit", BLOCK, "delete", 1),
    Kind("commit", "app.bsky.graph.listitem", "delete", 1),
    Kind("commit", "app.bsky.feed.threadgate", "delete", 1),
    Kind("identity", None, None, 10),
    Kind("account", None, None, 10),
    Kind("commit", "app.bsky.feed.threadgate", "create", 5),
    Kind("commit", "app.bsky.feed.postgate", "create", 3),
    Kind("commit", "app.bsky.graph.listitem", "create", 7),
    Kind("commit", "app.bsky.graph.list", "create", 1),
    Kind("commit", "app.bsky.graph.starterpack", "create", 1),
    Kind("commit", "app.bsky.graph.listblock", "create", 1),
    Kind("commit", "chat.bsky.actor.declaration", "create", 3),
    Kind("commit", "place.stream.broadcast.origin", "update", 2),
    Kind("commit", "place.stream.chat.message", "create", 3),
    Kind("commit", "fyi.unravel.frontpage.vote", "create", 2),
    Kind("commit", "sh.tangled.feed.star", "create", 1),
    Kind("commit", "app.bsky.actor.status", "create", 1),
)
assert sum(k.per_mille for k in MIX) == WINDOW, "the mix must add up to 1000 per mille"

# ---------------------------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    """The whitespace-separated words of `text`."""
    return text.split()


_EN = _split("""
the a an and or but so if when while because just really very still also even maybe never always today's
i you we they he she it my your our their this that these those here there what who why how where
is are was were be been being have has had do does did will would can could should might must
think know feel want need love like hate see look watch read write make take give find tell ask
work play go come get got going coming try trying post posting thread reply quote share follow
people person friend friends family kids dog cat cats dogs bird birds garden flowers tree trees rain
sun sunny cloudy weather summer winter spring autumn night morning evening afternoon weekend week
day days year years time life world city home house room street car bike train bus plane trip travel
music song album band concert movie film show series episode book books story stories art artist
drawing painting photo picture game games player team match season goal win lose score fans
news policy election vote government court law report data science research study paper climate
energy water food dinner lunch breakfast tea pizza bread cake cheese soup pasta rice salad
good great nice bad best worst new old big small little long short happy sad tired excited
beautiful amazing funny weird wild cool hot cold fresh quiet loud busy slow fast easy hard
first last next other another every some many much more most few less least only same different
thanks thank please sorry yes no okay lol omg wow hey hello hi yeah honestly literally actually
school class teacher students job office meeting email phone computer code software bug
internet website app update feature launch release version open source community online
health doctor hospital sleep coffee-free walk run gym yoga dance sing laugh cry smile dream
""")
_EN = [w for w in _EN if w != "coffee-free"]
_PT = _split("o a os as um uma e que de do da em no na para com não sim muito bom boa dia noite hoje amanhã "
       "gente amigo amiga casa trabalho música filme jogo time futebol vida amor obrigado obrigada "
       "tudo nada agora sempre nunca ainda mais menos ano semana chuva sol praia cidade")
_ES = _split("el la los las un una y que de del en para con por no sí muy bueno buena día noche hoy mañana "
       "gente amigo amiga casa trabajo música película juego equipo fútbol vida amor gracias "
       "todo nada ahora siempre nunca todavía más menos año semana lluvia sol playa ciudad")
_DE = _split("der die das ein eine und oder aber nicht ja sehr gut heute morgen abend nacht Leute Freund "
       "Haus Arbeit Musik Film Spiel Mannschaft Leben Liebe danke alles nichts jetzt immer nie noch "
       "mehr weniger Jahr Woche Regen Sonne Stadt schön Wetter Zug Bahn Katze Hund")
_FR = _split("le la les un une et ou mais que de du des en pour avec pas oui très bon bonne jour nuit "
       "aujourd'hui demain gens ami amie maison travail musique film jeu équipe vie amour merci "
       "tout rien maintenant toujours jamais encore plus moins année semaine pluie soleil ville")
_JA = _split("今日 明日 昨日 本当に すごい かわいい 楽しい 嬉しい 疲れた ありがとう おはよう こんにちは おやすみ "
       "仕事 会社 電車 ご飯 ラーメン 猫 犬 空 雨 桜 夏 冬 音楽 映画 ゲーム アニメ 漫画 絵 写真 友達 "
       "みんな 私 僕 これ それ あれ です ます でした した する ない ある いる 思う 見た 行った "
       "の は が を に で と も から まで よ ね な ！ 。 、 w 草")
_ZH = _split("今天 明天 昨天 真的 非常 可爱 开心 高兴 累了 谢谢 早上好 你好 晚安 工作 公司 地铁 吃饭 "
       "面条 猫 狗 天空 下雨 夏天 冬天 音乐 电影 游戏 动画 漫画 照片 朋友 大家 我 你 他 这个 那个 "
       "的 了 是 在 有 和 吗 呢 吧 。 ， ！")
_KO = _split("오늘 내일 어제 정말 진짜 너무 귀여워 좋아 행복해 피곤해 감사합니다 안녕하세요 잘자 일 회사 "
       "지하철 밥 라면 고양이 강아지 하늘 비 여름 겨울 음악 영화 게임 애니 만화 사진 친구 우리 나 너 "
       "이거 그거 있어요 없어요 했어요 봤어요 갔어요 ㅋㅋㅋ ㅠㅠ")
_RU = _split("сегодня завтра вчера очень хорошо плохо привет спасибо пожалуйста работа дом город музыка "
       "фильм игра друг друзья люди жизнь любовь время год неделя дождь солнце кошка собака "
       "это что как где когда почему и но или не да нет")
_UK = _split("сьогодні завтра вчора дуже добре погано привіт дякую будь ласка робота дім місто музика "
       "фільм гра друг друзі люди життя любов час рік тиждень дощ сонце кіт собака "
       "це що як де коли чому і але або не так ні")
_AR = _split("اليوم غدا أمس جدا جميل شكرا مرحبا صباح الخير مساء عمل بيت مدينة موسيقى فيلم لعبة صديق "
       "أصدقاء الناس حياة حب وقت سنة أسبوع مطر شمس قطة كلب هذا ماذا كيف أين متى لماذا و لكن لا نعم")
_EMOJIS = _split("😂 ❤️ 🥺 ✨ 🔥 😭 🙏 😍 🥰 💀 👀 🎉 💙 🦋 😊 🤔 👍 🙌 💯 🌸 🌈 🍕 🎶 📸 🐈 🐕 🌙 ☀️ 🤣 😅 "
           "🫶 😎 🥳 💜 🖤 🤍 🌊 🍂 ❄️ 🚀")
_WORDS: dict[str, tuple[list[str], str]] = {
    "en": (_EN, " "), "pt": (_PT, " "), "es": (_ES, " "), "de": (_DE, " "), "fr": (_FR, " "), "ja": (_JA, ""),
    "zh": (_ZH, ""), "ko": (_KO, " "), "ru": (_RU, " "), "uk": (_UK, " "), "ar": (_AR, " "),
    "emoji": (_EMOJIS, " "),
}
_TAGS = ("art", "music", "news", "gaming", "books", "science", "politics", "cats", "dogs", "nature", "football",
         "anime", "writing", "ttrpg", "blacksky", "fursuit", "vtuber", "climate", "booksky", "movies")
_DOMAINS = ("www.youtube.com", "youtu.be", "www.theguardian.com", "github.com", "www.nytimes.com", "bsky.app",
            "substack.com", "en.wikipedia.org", "apnews.com", "open.spotify.com", "www.bbc.co.uk", "www.twitch.tv",
            "www.instagram.com", "www.washingtonpost.com", "www.reuters.com", "arxiv.org", "ko-fi.com",
            "www.patreon.com", "store.steampowered.com", "www.404media.co")
_NAMES = ("alex", "sam", "maria", "yuki", "lucas", "ana", "leo", "mia", "noah", "emma", "kai", "sofia", "hana",
          "omar", "lena", "jonas", "chloe", "ines", "mateo", "aiko", "ivan", "olga", "ravi", "priya", "li", "wei",
          "minji", "jisoo", "tom", "kate", "ben", "zoe", "max", "nina", "hugo", "lea", "felix", "sara", "diego",
          "lucia", "ren", "sora", "amir", "layla", "finn", "ella", "theo", "ruby", "jack", "lily")
_HANDLE_WORDS = ("art", "writes", "draws", "dev", "music", "games", "books", "photo", "cat", "fox", "moon", "star",
                 "wolf", "bear", "sky", "sea", "rain", "pixel", "byte", "craft", "studio", "lab", "works", "news",
                 "blue", "green", "red", "gold", "silver", "zen")
_HANDLE_TLDS = (".bsky.social",) * 17 + (".com", ".dev", ".net")
_OTHER_TEXT = ("live now", "great stream", "hello chat", "gg", "nice play", "lol", "what a match", "brb")


def _check_vocabulary() -> None:
    """The special words must not occur inside any generated word, so their frequencies are exactly controlled."""
    specials = (COMMON_WORD, RARE_WORD, "bluesky", TAG, CJK_WORD, CYRILLIC_WORD, EMOJI)
    pools = [w for words, _ in _WORDS.values() for w in words]
    pools += [*_TAGS, *_DOMAINS, *_NAMES, *_HANDLE_WORDS, *_OTHER_TEXT]
    for word in pools:
        for special in specials:
            if special in word.lower():
                raise AssertionError(f"vocabulary word {word!r} contains the special word {special!r}")


_check_vocabulary()

# ---------------------------------------------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------------------------------------------

B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_TABLE = bytes.maketrans(bytes(range(256)), bytes(ord(B32[b & 31]) for b in range(256)))
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TID_PAIRS = tuple(a + b for a in TID_ALPHABET for b in TID_ALPHABET)
_MASK64 = (1 << 64) - 1


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


def handle_for(did: str) -> str:
    """The deterministic handle of a DID (pure function of the DID string, unique in practice)."""
    h = hashlib.blake2b(did.encode(), digest_size=8, person=b"handle").digest()
    name = _NAMES[h[0] % len(_NAMES)]
    word = _HANDLE_WORDS[h[1] % len(_HANDLE_WORDS)]
    tld = _HANDLE_TLDS[h[2] % len(_HANDLE_TLDS)]
    suffix = did[-6:] if did.startswith("did:plc:") else b32_chars(h[3:8])
    return f"{name}{word}{suffix}{tld}"


class _IsoClock:
    """Formats unix microseconds as Jetstream's `2026-05-25T14:23:28.778Z`, caching the per-second prefix."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, time_us: int) -> str:
        sec, us = divmod(time_us, 1_000_000)
        prefix = self._cache.get(sec)
        if prefix is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            prefix = dt.datetime.fromtimestamp(sec, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._cache[sec] = prefix
        return f"{prefix}.{us // 1000:03d}Z"


def iso_time(time_us: int) -> str:
    """`2026-05-25T14:23:28.778Z` for a time in unix microseconds."""
    return _IsoClock()(time_us)


def parse_time(value: str) -> int:
    """Unix microseconds from an ISO 8601 time (`2026-05-25`, `2026-05-25T14:00:00Z`, ...; naive = UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-05-25T00:00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * 1_000_000 + parsed.microsecond


# ---------------------------------------------------------------------------------------------------------------
# Time profile
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How events spread over simulated time.

    `rate` is the mean number of events per simulated second. With `diurnal`, the instantaneous rate follows a
    sine over the UTC day, highest at `peak_hour_utc` and `peak_ratio` times the lowest, with the same daily mean.
    """

    rate: float = EVENTS_PER_DAY / 86_400
    diurnal: bool = False
    peak_ratio: float = 1.6
    peak_hour_utc: float = 15.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"the profile rate must be a positive number of events per second, got {self.rate!r}")
        if self.peak_ratio < 1:
            raise ValueError(f"peak_ratio must be >= 1, got {self.peak_ratio!r}")

    @property
    def amplitude(self) -> float:
        """Relative amplitude A of the sine: rate * (1 +- A), so peak/trough = (1+A)/(1-A)."""
        return (self.peak_ratio - 1) / (self.peak_ratio + 1) if self.diurnal else 0.0

    def rate_at(self, unix_s: float) -> float:
        """Instantaneous events per second at a unix time."""
        a = self.amplitude
        if not a:
            return self.rate
        return self.rate * (1 + a * math.cos(2 * math.pi * (unix_s - self.peak_hour_utc * 3600) / 86_400))


ANCHOR = 64


class _Clock:
    """Maps event numbers to base times (unix µs) and back for one profile and start time."""

    def __init__(self, profile: Profile, start_us: int) -> None:
        self.profile = profile
        self.start_us = start_us
        self._start_s = start_us / 1e6
        self._a = profile.amplitude
        self._w = 2 * math.pi / 86_400
        self._phase0 = self._w * (self._start_s - profile.peak_hour_utc * 3600)
        self._k = self._a / self._w
        self._sin0 = math.sin(self._phase0)
        self._anchors: dict[int, float] = {}

    def count(self, rel_s: float) -> float:
        """Expected number of events in the first `rel_s` simulated seconds (the cumulative rate)."""
        if not self._a:
            return self.profile.rate * rel_s
        return self.profile.rate * (rel_s + self._k * (math.sin(self._phase0 + self._w * rel_s) - self._sin0))

    def seconds(self, i: int) -> float:
        """Simulated seconds after the start at which event `i` is due (solves count(t) = i)."""
        rate = self.profile.rate
        t = i / rate
        if not self._a:
            return t
        a, w, p0 = self._a, self._w, self._phase0
        for _ in range(30):
            f = rate * (t + self._k * (math.sin(p0 + w * t) - self._sin0)) - i
            step = f / (rate * (1 + a * math.cos(p0 + w * t)))
            t -= step
            if abs(step) < 1e-9:
                break
        return t

    def base_us(self, i: int) -> int:
        """Base time of event `i` in unix microseconds (non-decreasing in `i`).

        With a diurnal curve, exact times are solved every `ANCHOR` events and interpolated linearly in between
        (the rate hardly changes over a few dozen events; the result stays monotone and deterministic).
        """
        if not self._a:
            return self.start_us + math.floor(i / self.profile.rate * 1e6)
        k, r = divmod(i, ANCHOR)
        t0 = self._anchor(k)
        if r:
            t0 += (self._anchor(k + 1) - t0) * r / ANCHOR
        return self.start_us + math.floor(t0 * 1e6)

    def _anchor(self, k: int) -> float:
        t = self._anchors.get(k)
        if t is None:
            if len(self._anchors) > 65_536:
                self._anchors.clear()
            t = self._anchors[k] = self.seconds(k * ANCHOR)
        return t

    def index_at_or_after(self, time_us: int) -> int:
        """The smallest i >= 0 with base_us(i) >= time_us."""
        if time_us <= self.start_us:
            return 0
        i = max(0, math.ceil(self.count((time_us - self.start_us) / 1e6)))
        while i > 0 and self.base_us(i - 1) >= time_us:
            i -= 1
        while self.base_us(i) < time_us:
            i += 1
        return i


# ---------------------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------------------


class Generated(NamedTuple):
    """One generated event, serialised, with the fields a server filters on."""

    index: int
    time_us: int
    did: str
    kind: str
    collection: str | None
    json: bytes


class PostRef(NamedTuple):
    """What other records need to point at a generated post."""

    uri: str
    cid: str
    did: str


_Record = dict[str, Any]
_Maker = Callable[[int, bytes, random.Random, int, str], dict[str, Any]]


class EventGenerator:
    """The deterministic event sequence of one seed, start time and rate profile.

    - `event(i)` / `event_json(i)`: event number i (random access; the same bytes every time).
    - `iter_events(start, stop)` / `iter_generated(start, stop)`: fast sequential generation.
    - `base_us(i)`, `time_us(i)`, `index_at_or_after(time_us)`: the time mapping (see the module docstring).

    Everything random about event i comes from a keyed hash of (seed, i) (kind slot, author, CID, jitter) and from
    a PRNG seeded per block of `block_size` events (content); so events are generated block by block, and a small
    cache of recent blocks serves random access and several readers near the same position.
    """

    def __init__(
        self,
        seed: int = 0,
        start_us: int = DEFAULT_START_US,
        profile: Profile | None = None,
        *,
        users: int = 2_000_000,
        jitter_us: int = 40_000,
        block_size: int = 64,
        cache_blocks: int = 256,
    ) -> None:
        if users < 1000:
            raise ValueError(f"users must be at least 1000, got {users}")
        if jitter_us < 0 or block_size < 1:
            raise ValueError("jitter_us must be >= 0 and block_size >= 1")
        self.seed = seed
        self.start_us = start_us
        self.profile = profile or Profile()
        self.users = users
        self.jitter_us = jitter_us
        self.block_size = block_size
        self._clock = _Clock(self.profile, start_us)
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=32, person=b"fh-seed").digest()
        self._block_seed = int.from_bytes(self._key[:16], "big")
        self._iso = _IsoClock()
        self._cache: dict[int, list[Generated]] = {}
        self._cache_blocks = cache_blocks
        self._post_refs: dict[int, PostRef] = {}
        self._did_cache = [self._make_did(r) for r in range(min(users, 20_000))]
        self._tables, self._post_slots = self._build_tables()
        self._posts_per_window = len(self._post_slots[0])
        self._makers = self._build_makers()
        self._word_bytes = {w: len(w.encode()) for words, _ in _WORDS.values() for w in words}
        self._lang_codes = [code for code, _ in LANGUAGES]
        self._lang_cum = _cumulative([share for _, share in LANGUAGES])

    # -- time -------------------------------------------------------------------------------------------------

    def base_us(self, i: int) -> int:
        """Base time of event i (unix µs): non-decreasing in i; the event's time_us is at most jitter_us less."""
        return self._clock.base_us(i)

    def time_us(self, i: int) -> int:
        """The `time_us` field of event i (its base time minus its jitter)."""
        return self._clock.base_us(i) - self._jitter(self._header(i))

    def index_at_or_after(self, time_us: int) -> int:
        """The first event whose base time is >= time_us: replaying from it covers every event with time_us >= it."""
        return self._clock.index_at_or_after(time_us)

    # -- access ---------------------------------------------------------------------------------------------------

    def generated(self, i: int) -> Generated:
        """Event i as a `Generated` (cached block-wise)."""
        if i < 0:
            raise IndexError(f"event numbers start at 0, got {i}")
        block, offset = divmod(i, self.block_size)
        return self._cached_block(block)[offset]

    def event_json(self, i: int) -> bytes:
        """Event i serialised exactly as the simulator sends it."""
        return self.generated(i).json

    def event(self, i: int) -> dict[str, Any]:
        """Event i as a fresh dict (safe to modify)."""
        return orjson.loads(self.generated(i).json)

    def iter_generated(self, start: int, stop: int) -> Iterator[Generated]:
        """Events start..stop-1 in order, via the block cache (use for serving)."""
        for i in range(start, stop):
            yield self.generated(i)

    def iter_events(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Events start..stop-1 as fresh dicts, generated without caching (the fastest bulk path)."""
        if start < 0:
            raise IndexError(f"event numbers start at 0, got {start}")
        bs = self.block_size
        for block in range(start // bs, -(-stop // bs)):
            rng = self._block_rng(block)
            for i in range(block * bs, min(stop, (block + 1) * bs)):
                event = self._make(i, rng)
                if i >= start:
                    yield event

    # -- blocks -------------------------------------------------------------------------------------------------

    def _block_rng(self, block: int) -> random.Random:
        return random.Random((self._block_seed << 64) ^ (block & _MASK64))

    def _cached_block(self, block: int) -> list[Generated]:
        events = self._cache.get(block)
        if events is None:
            events = self._generate_block(block)
            if len(self._cache) >= self._cache_blocks:
                self._cache.pop(next(iter(self._cache)))
            self._cache[block] = events
        return events

    def _generate_block(self, block: int) -> list[Generated]:
        rng = self._block_rng(block)
        out = []
        dumps = orjson.dumps
        for i in range(block * self.block_size, (block + 1) * self.block_size):
            event = self._make(i, rng)
            commit = event.get("commit")
            out.append(Generated(i, event["time_us"], event["did"], event["kind"],
                                 commit["collection"] if commit else None, dumps(event)))
        return out

    # -- per-event hashing ------------------------------------------------------------------------------------

    def _header(self, i: int) -> bytes:
        """64 keyed-hash bytes of event i: [0:52] CID, [52:56] author, [56:59] jitter, [59:61] delay, [61:63] clocks."""
        return hashlib.blake2b(i.to_bytes(9, "big", signed=True), digest_size=64, key=self._key).digest()

    def _jitter(self, header: bytes) -> int:
        if not self.jitter_us:
            return 0
        return int.from_bytes(header[56:59], "big") % self.jitter_us

    def _author_rank(self, header: bytes) -> int:
        """Author popularity rank: skewed (density ~ rank^-0.6), rank 0 the most active."""
        u = int.from_bytes(header[52:56], "big") / 4294967296.0
        return int(self.users * u ** 2.5)

    def _make_did(self, rank: int) -> str:
        h = hashlib.blake2b(rank.to_bytes(8, "big"), digest_size=24, key=self._key, person=b"fh-did").digest()
        return "did:plc:" + b32_chars(h)

    def did(self, rank: int) -> str:
        """The DID of the user with popularity rank `rank` (0 = most active)."""
        cache = self._did_cache
        return cache[rank] if rank < len(cache) else self._make_did(rank)

    def _popular_did(self, rng: random.Random) -> str:
        """A DID skewed harder towards popular accounts (follow, block and mention targets)."""
        return self.did(int(self.users * rng.random() ** 4))

    # -- kinds ----------------------------------------------------------------------------------------------------

    def _build_tables(self) -> tuple[list[list[int]], list[list[int]]]:
        """64 shuffled windows of the mix; each 1000-event window uses one, chosen by hash."""
        slots = [k for k, kind in enumerate(MIX) for _ in range(kind.per_mille)]
        rng = random.Random(self._block_seed ^ 0x5EED)
        tables, post_slots = [], []
        post_kind = next(k for k, kind in enumerate(MIX) if kind.collection == POST and kind.operation == "create")
        for _ in range(64):
            table = slots[:]
            rng.shuffle(table)
            tables.append(table)
            post_slots.append([pos for pos, k in enumerate(table) if k == post_kind])
        return tables, post_slots

    def _table_of(self, window: int) -> int:
        return ((window * 0x9E3779B97F4A7C15 + self._block_seed) & _MASK64) >> 58

    def kind_of(self, i: int) -> Kind:
        """The mix entry of event i."""
        window, pos = divmod(i, WINDOW)
        return MIX[self._tables[self._table_of(window)][pos]]

    def post_index(self, n: int) -> int:
        """Event number of the n-th post (n may be negative: posts from before the start, never emitted)."""
        window, r = divmod(n, self._posts_per_window)
        return window * WINDOW + self._post_slots[self._table_of(window)][r]

    def post_ref(self, n: int) -> PostRef:
        """URI, CID and author of the n-th post, computed without generating it."""
        ref = self._post_refs.get(n)
        if ref is None:
            i = self.post_index(n)
            header = self._header(i)
            did = self.did(self._author_rank(header))
            created = self._created_us(self._clock.base_us(i), header)
            ref = PostRef(f"at://{did}/{POST}/{tid(created, header[61] & 31)}", "bafyrei" + b32_chars(header[:52]),
                          did)
            if len(self._post_refs) > 100_000:
                self._post_refs.clear()
            self._post_refs[n] = ref
        return ref

    @staticmethod
    def _created_us(base_us: int, header: bytes) -> int:
        """createdAt of an event's record: up to 2 s before its base time (clients' clocks and PDS latency)."""
        return base_us - int.from_bytes(header[59:61], "big") * 30

    def _recent_post(self, i: int, rng: random.Random) -> PostRef:
        """A post made before event i: 40% one of the recent 'hot' posts (every 64th), else any recent post."""
        n_now = (i // WINDOW) * self._posts_per_window
        if rng.random() < 0.4:
            n = (n_now // 64 - 1 - int(300 * rng.random() ** 2)) * 64
        else:
            n = n_now - 1 - int(50_000 * rng.random() ** 3)
        return self.post_ref(n)

    # -- events ---------------------------------------------------------------------------------------------------

    def _make(self, i: int, rng: random.Random) -> dict[str, Any]:
        """Event i (the block PRNG must be at event i's position)."""
        header = self._header(i)
        base = self._clock.base_us(i)
        time_us = base - self._jitter(header)
        did = self.did(self._author_rank(header))
        window, pos = divmod(i, WINDOW)
        k = self._tables[self._table_of(window)][pos]
        kind = MIX[k]
        if kind.kind == "identity":
            return {"did": did, "time_us": time_us, "kind": "identity",
                    "identity": {"did": did, "handle": handle_for(did), "seq": SEQ_BASE + i,
                                 "time": self._iso(base - 50_000)}}
        if kind.kind == "account":
            body: dict[str, Any] = {"active": True, "did": did, "seq": SEQ_BASE + i}
            u = rng.random()
            if u < 0.15:
                body["active"] = False
                body["status"] = "deactivated" if u < 0.10 else "deleted" if u < 0.13 else "takendown"
            body["time"] = self._iso(base - 50_000)
            return {"did": did, "time_us": time_us, "kind": "account", "account": body}
        rev = tid(base - 2_000, header[62] & 31)
        collection = kind.collection
        assert collection is not None
        if kind.operation == "delete":
            old = self._created_us(base, header) - int(rng.random() ** 2 * 30 * 86_400e6)
            rkey = "self" if collection == PROFILE else tid(old, header[61] & 31)
            commit: dict[str, Any] = {"rev": rev, "operation": "delete", "collection": collection, "rkey": rkey}
        else:
            created = self._created_us(base, header)
            record, rkey = self._makers[k](i, header, rng, created, did)
            commit = {"rev": rev, "operation": kind.operation, "collection": collection, "rkey": rkey,
                      "record": record, "cid": "bafyrei" + b32_chars(header[:52])}
        return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}

    def _build_makers(self) -> list[Any]:
        by_collection: dict[str, Any] = {
            LIKE: self._like, POST: self._post, REPOST: self._repost, FOLLOW: self._follow, BLOCK: self._block,
            PROFILE: self._profile, "app.bsky.feed.threadgate": self._threadgate,
            "app.bsky.feed.postgate": self._postgate, "app.bsky.graph.listitem": self._listitem,
            "app.bsky.graph.list": self._list, "app.bsky.graph.starterpack": self._starterpack,
            "app.bsky.graph.listblock": self._listblock, "chat.bsky.actor.declaration": self._chat_declaration,
            "place.stream.broadcast.origin": self._stream_origin, "place.stream.chat.message": self._stream_chat,
            "fyi.unravel.frontpage.vote": self._frontpage_vote, "sh.tangled.feed.star": self._tangled_star,
            "app.bsky.actor.status": self._status,
        }
        return [by_collection.get(kind.collection) if kind.kind == "commit" else None for kind in MIX]

    def _rkey(self, created: int, header: bytes) -> str:
        return tid(created, header[61] & 31)

    def _subject_record(self, collection: str, i: int, header: bytes, rng: random.Random, created: int
                        ) -> tuple[_Record, str]:
        ref = self._recent_post(i, rng)
        record: _Record = {"$type": collection, "createdAt": self._iso(created),
                           "subject": {"cid": ref.cid, "uri": ref.uri}}
        if rng.random() < 0.03:
            reposter = self._popular_did(rng)
            record["via"] = {"cid": "bafyrei" + b32_chars(rng.randbytes(52)),
                             "uri": self._at_uri(reposter, REPOST, created, rng)}
        return record, self._rkey(created, header)

    def _like(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return self._subject_record(LIKE, i, header, rng, created)

    def _repost(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return self._subject_record(REPOST, i, header, rng, created)

    def _follow(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": FOLLOW, "createdAt": self._iso(created), "subject": self._popular_did(rng)},
                self._rkey(created, header))

    def _block(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": BLOCK, "createdAt": self._iso(created), "subject": self._popular_did(rng)},
                self._rkey(created, header))

    def _blob(self, rng: random.Random, mime: str, low: int, high: int) -> _Record:
        return {"$type": "blob", "ref": {"$link": "bafkrei" + b32_chars(rng.randbytes(52))}, "mimeType": mime,
                "size": rng.randint(low, high)}

    def _words(self, rng: random.Random, lang: str, n: int) -> str:
        words, sep = _WORDS[lang]
        choice = rng.choice
        return sep.join([choice(words) for _ in range(n)])

    def _profile(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        record: _Record = {"$type": PROFILE, "avatar": self._blob(rng, "image/jpeg", 20_000, 1_000_000)}
        if rng.random() < 0.5:
            record["banner"] = self._blob(rng, "image/jpeg", 50_000, 2_000_000)
        record["createdAt"] = self._iso(created - int(rng.random() * 500 * 86_400e6))
        record["description"] = self._words(rng, "en", rng.randint(0, 25))
        record["displayName"] = handle_for(did).split(".")[0][:-6].title() + (rng.choice(_EMOJIS)
                                                                            if rng.random() < 0.2 else "")
        if rng.random() < 0.2:
            ref = self._recent_post(i, rng)
            record["pinnedPost"] = {"cid": ref.cid, "uri": ref.uri}
        return record, "self"

    # -- posts ------------------------------------------------------------------------------------------------

    def _post(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        rand = rng.random
        lang = self._lang_codes[_pick(self._lang_cum, rand())]
        embed = self._embed(i, rng) if rand() < 0.30 else None
        text, facets = self._post_text(rng, lang or "en", allow_empty=embed is not None)
        record: _Record = {"$type": POST, "createdAt": self._iso(created)}
        if embed is not None:
            record["embed"] = embed
        if facets:
            record["facets"] = facets
        if lang is not None:
            record["langs"] = ["en"] if lang == "emoji" else ([lang, "en"] if rand() < 0.03 else [lang])
        if rand() < 0.32:
            parent = self._recent_post(i, rng)
            root = parent if rand() < 0.5 else self._recent_post(i - 200_000, rng)
            record["reply"] = {"parent": {"cid": parent.cid, "uri": parent.uri},
                               "root": {"cid": root.cid, "uri": root.uri}}
        record["text"] = text
        return record, self._rkey(created, header)

    def _post_text(self, rng: random.Random, lang: str, *, allow_empty: bool) -> tuple[str, list[_Record]]:
        """Text of a post and its facets (byte offsets into the UTF-8 text); at most 300 characters."""
        rand = rng.random
        words, sep = _WORDS[lang]
        if allow_empty and rand() < 0.15:
            return "", []
        target = 6 + int(274 * rand() ** 3)
        pieces: list[str] = []
        facets: list[_Record] = []
        nbytes = 0
        nchars = 0
        word_bytes = self._word_bytes

        def add(piece: str, blen: int, feature: _Record | None = None) -> None:
            nonlocal nbytes, nchars
            if pieces:
                pieces.append(" " if feature is not None or not sep else sep)
                nbytes += 1
                nchars += 1
            if feature is not None:
                facets.append({"$type": "app.bsky.richtext.facet", "features": [feature],
                               "index": {"byteEnd": nbytes + blen, "byteStart": nbytes}})
            pieces.append(piece)
            nbytes += blen
            nchars += len(piece)

        if rand() < 0.10:  # mentions, mostly at the start
            for _ in range(1 + (rand() < 0.3)):
                target_did = self._popular_did(rng)
                mention = "@" + handle_for(target_did)
                add(mention, len(mention), {"$type": "app.bsky.richtext.facet#mention", "did": target_did})
        specials: list[tuple[str, int]] = []
        if rand() < COMMON_WORD_RATE:
            specials.append(("Coffee" if rand() < 0.2 else COMMON_WORD, 6))
        if rand() < RARE_WORD_RATE:
            specials.append((RARE_WORD, 7))
        if rand() < PHRASE_RATE:
            specials.append((PHRASE, 20))
        if lang in ("ja", "zh") and rand() < LOCAL_WORD_RATE:
            specials.append((CJK_WORD, 6))
        if lang in ("ru", "uk") and rand() < LOCAL_WORD_RATE:
            specials.append((CYRILLIC_WORD, 8))
        insert_at = int(rand() * 8)
        choice = rng.choice
        count = 0
        while nchars < target:
            if count == insert_at and specials:
                for word, blen in specials:
                    add(word, blen)
                specials = []
            word = choice(words)
            if nchars + len(word) + 1 > 250:
                break
            add(word, word_bytes[word])
            count += 1
        for word, blen in specials:
            add(word, blen)
        if rand() < 0.08:
            domain = choice(_DOMAINS)
            uri = f"https://{domain}/{self._words(rng, 'en', 1 + int(rand() * 3)).replace(' ', '-')}"
            shown = uri[8:] if len(uri) < 40 else uri[8:33] + "..."
            add(shown, len(shown), {"$type": "app.bsky.richtext.facet#link", "uri": uri})
        tags = [choice(_TAGS) for _ in range(int(rand() * 3))] if rand() < 0.06 else []
        if rand() < TAG_RATE:
            tags.append(TAG)
        for tag in dict.fromkeys(tags):
            add("#" + tag, len(tag) + 1, {"$type": "app.bsky.richtext.facet#tag", "tag": tag})
        if rand() < EMOJI_RATE:
            add(EMOJI, 3)
        elif rand() < 0.12:
            emoji = choice(_EMOJIS)
            add(emoji, len(emoji.encode()))
        return "".join(pieces), facets

    def _embed(self, i: int, rng: random.Random) -> _Record:
        """A post embed: images 55%, external link 20%, quote 11%, video 8%, quote with media 6%."""
        u = rng.random()
        if u < 0.55:
            return self._images(rng)
        if u < 0.75:
            domain = rng.choice(_DOMAINS)
            external: _Record = {"description": self._words(rng, "en", rng.randint(0, 30))}
            if rng.random() < 0.6:
                external["thumb"] = self._blob(rng, "image/jpeg", 10_000, 900_000)
            external["title"] = self._words(rng, "en", rng.randint(2, 10)).title()
            external["uri"] = f"https://{domain}/{self._words(rng, 'en', 3).replace(' ', '-')}"
            return {"$type": "app.bsky.embed.external", "external": external}
        if u < 0.86:
            ref = self._recent_post(i, rng)
            return {"$type": "app.bsky.embed.record", "record": {"cid": ref.cid, "uri": ref.uri}}
        if u < 0.94:
            return {"$type": "app.bsky.embed.video", "aspectRatio": {"height": 1920, "width": 1080},
                    "video": self._blob(rng, "video/mp4", 500_000, 50_000_000)}
        ref = self._recent_post(i, rng)
        return {"$type": "app.bsky.embed.recordWithMedia", "media": self._images(rng),
                "record": {"$type": "app.bsky.embed.record", "record": {"cid": ref.cid, "uri": ref.uri}}}

    def _images(self, rng: random.Random) -> _Record:
        images = []
        for _ in range(1 + int(rng.random() ** 3 * 4)):
            alt = self._words(rng, "en", rng.randint(2, 12)) if rng.random() < 0.3 else ""
            width = rng.choice((1000, 1200, 1536, 2000))
            images.append({"alt": alt, "aspectRatio": {"height": int(width * rng.choice((0.5625, 0.75, 1, 1.333))),
                                                       "width": width},
                           "image": self._blob(rng, "image/jpeg", 30_000, 1_000_000)})
        return {"$type": "app.bsky.embed.images", "images": images}

    # -- other collections ------------------------------------------------------------------------------------

    def _at_uri(self, did: str, collection: str, created: int, rng: random.Random) -> str:
        return f"at://{did}/{collection}/{tid(created - int(rng.random() * 86_400e6), rng.getrandbits(10))}"

    def _threadgate(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        rkey = self._rkey(created, header)
        rule = rng.choice(("mentionRule", "followingRule", "followerRule"))
        return ({"$type": "app.bsky.feed.threadgate", "allow": [{"$type": f"app.bsky.feed.threadgate#{rule}"}],
                 "createdAt": self._iso(created), "hiddenReplies": [], "post": f"at://{did}/{POST}/{rkey}"}, rkey)

    def _postgate(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        rkey = self._rkey(created, header)
        return ({"$type": "app.bsky.feed.postgate", "createdAt": self._iso(created), "detachedEmbeddingUris": [],
                 "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}],
                 "post": f"at://{did}/{POST}/{rkey}"}, rkey)

    def _listitem(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.graph.listitem", "createdAt": self._iso(created),
                 "list": self._at_uri(did, "app.bsky.graph.list", created, rng), "subject": self._popular_did(rng)},
                self._rkey(created, header))

    def _list(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.graph.list", "createdAt": self._iso(created),
                 "description": self._words(rng, "en", rng.randint(0, 15)),
                 "name": self._words(rng, "en", rng.randint(1, 4)).title(),
                 "purpose": rng.choice(("app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist"))},
                self._rkey(created, header))

    def _starterpack(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                     ) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.graph.starterpack", "createdAt": self._iso(created), "feeds": [],
                 "list": self._at_uri(did, "app.bsky.graph.list", created, rng),
                 "name": self._words(rng, "en", rng.randint(1, 4)).title(), "updatedAt": self._iso(created)},
                self._rkey(created, header))

    def _listblock(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.graph.listblock", "createdAt": self._iso(created),
                 "subject": self._at_uri(self._popular_did(rng), "app.bsky.graph.list", created, rng)},
                self._rkey(created, header))

    def _chat_declaration(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                          ) -> tuple[_Record, str]:
        return ({"$type": "chat.bsky.actor.declaration",
                 "allowIncoming": rng.choice(("following", "all", "none"))}, "self")

    def _stream_origin(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                       ) -> tuple[_Record, str]:
        server = f"did:web:prod-{rng.choice(('sea', 'iad', 'fra'))}{rng.randint(0, 3)}.stream.place"
        host = server.removeprefix("did:web:")
        return ({"$type": "place.stream.broadcast.origin", "broadcaster": "did:web:stream.place", "server": server,
                 "streamer": did, "updatedAt": self._iso(created),
                 "websocketURL": f"wss://{host}/xrpc/place.stream.live.subscribeSegments?streamer="
                                 + did.replace(":", "%3A")},
                f"{did}::{server}")

    def _stream_chat(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                     ) -> tuple[_Record, str]:
        return ({"$type": "place.stream.chat.message", "createdAt": self._iso(created),
                 "streamer": self._popular_did(rng), "text": rng.choice(_OTHER_TEXT)}, self._rkey(created, header))

    def _frontpage_vote(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                        ) -> tuple[_Record, str]:
        return ({"$type": "fyi.unravel.frontpage.vote", "createdAt": self._iso(created),
                 "subject": {"cid": "bafyrei" + b32_chars(rng.randbytes(52)),
                             "uri": self._at_uri(self._popular_did(rng), "fyi.unravel.frontpage.post", created, rng)}},
                self._rkey(created, header))

    def _tangled_star(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                      ) -> tuple[_Record, str]:
        return ({"$type": "sh.tangled.feed.star", "createdAt": self._iso(created),
                 "subject": self._at_uri(self._popular_did(rng), "sh.tangled.repo", created, rng)},
                self._rkey(created, header))

    def _status(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.actor.status", "createdAt": self._iso(created), "durationMinutes": 240,
                 "status": "app.bsky.actor.status#live"}, "self")


def _cumulative(weights: list[float]) -> list[float]:
    total = sum(weights)
    out, acc = [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _pick(cumulative: list[float], u: float) -> int:
    for k, c in enumerate(cumulative):
        if u < c:
            return k
    return len(cumulative) - 1


def measure_throughput(count: int = 200_000, seed: int = 0, *, diurnal: bool = False) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second) of sequential generation plus orjson serialisation."""
    import time

    gen = EventGenerator(seed, profile=Profile(diurnal=diurnal))
    dumps = orjson.dumps
    wall, cpu = time.perf_counter(), time.process_time()
    for event in gen.iter_events(0, count):
        dumps(event)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


if __name__ == "__main__":
    for curve in (False, True):
        per_wall, per_cpu = measure_throughput(diurnal=curve)
        print(f"{'diurnal' if curve else 'constant'} rate: {per_wall:,.0f} events/s wall, {per_cpu:,.0f} per CPU-s")

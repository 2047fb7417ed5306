"""What simulated posts say: the searchable vocabulary with known frequencies, the languages, and the word lists.

The searchable strings (`COMMON_WORD`, `RARE_WORD`, `PHRASE`, `TAG`, `CJK_WORD`, `CYRILLIC_WORD`, `EMOJI`) are
injected into posts at the rates in `VOCABULARY` and occur nowhere else: no word, tag, domain, name or handle word
contains them (checked at import). The validation harness and the tests search for them; see
`docs/simulator.md`.
"""

from __future__ import annotations

import re

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


def vocabulary_shares(languages: tuple[tuple[str | None, float], ...]) -> dict[str, float]:
    """Searchable strings -> expected share of posts containing them (independent draws per post), for posts in
    these language shares (`CJK_WORD` goes into Japanese and Chinese posts, `CYRILLIC_WORD` into Russian and
    Ukrainian ones)."""
    share = dict(languages)
    return {
        COMMON_WORD: COMMON_WORD_RATE,
        RARE_WORD: RARE_WORD_RATE,
        PHRASE: PHRASE_RATE,
        f"#{TAG}": TAG_RATE,
        CJK_WORD: LOCAL_WORD_RATE * (share.get("ja", 0.0) + share.get("zh", 0.0)),
        CYRILLIC_WORD: LOCAL_WORD_RATE * (share.get("ru", 0.0) + share.get("uk", 0.0)),
        EMOJI: EMOJI_RATE,
    }


VOCABULARY: dict[str, float] = vocabulary_shares(LANGUAGES)
"""The seed profile's `vocabulary_shares` (the real profile's: `firehose.simulator.realtext.REAL_VOCABULARY`)."""


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
EMOJIS = _split("😂 ❤️ 🥺 ✨ 🔥 😭 🙏 😍 🥰 💀 👀 🎉 💙 🦋 😊 🤔 👍 🙌 💯 🌸 🌈 🍕 🎶 📸 🐈 🐕 🌙 ☀️ 🤣 😅 "
          "🫶 😎 🥳 💜 🖤 🤍 🌊 🍂 ❄️ 🚀")
WORDS: dict[str, tuple[list[str], str]] = {
    "en": (_EN, " "), "pt": (_PT, " "), "es": (_ES, " "), "de": (_DE, " "), "fr": (_FR, " "), "ja": (_JA, ""),
    "zh": (_ZH, ""), "ko": (_KO, " "), "ru": (_RU, " "), "uk": (_UK, " "), "ar": (_AR, " "),
    "emoji": (EMOJIS, " "),
}
TAGS = ("art", "music", "news", "gaming", "books", "science", "politics", "cats", "dogs", "nature", "football",
        "anime", "writing", "ttrpg", "blacksky", "fursuit", "vtuber", "climate", "booksky", "movies")
DOMAINS = ("www.youtube.com", "youtu.be", "www.theguardian.com", "github.com", "www.nytimes.com", "bsky.app",
           "substack.com", "en.wikipedia.org", "apnews.com", "open.spotify.com", "www.bbc.co.uk", "www.twitch.tv",
           "www.instagram.com", "www.washingtonpost.com", "www.reuters.com", "arxiv.org", "ko-fi.com",
           "www.patreon.com", "store.steampowered.com", "www.404media.co")
NAMES = ("alex", "sam", "maria", "yuki", "lucas", "ana", "leo", "mia", "noah", "emma", "kai", "sofia", "hana",
         "omar", "lena", "jonas", "chloe", "ines", "mateo", "aiko", "ivan", "olga", "ravi", "priya", "li", "wei",
         "minji", "jisoo", "tom", "kate", "ben", "zoe", "max", "nina", "hugo", "lea", "felix", "sara", "diego",
         "lucia", "ren", "sora", "amir", "layla", "finn", "ella", "theo", "ruby", "jack", "lily")
HANDLE_WORDS = ("art", "writes", "draws", "dev", "music", "games", "books", "photo", "cat", "fox", "moon", "star",
                "wolf", "bear", "sky", "sea", "rain", "pixel", "byte", "craft", "studio", "lab", "works", "news",
                "blue", "green", "red", "gold", "silver", "zen")
HANDLE_TLDS = (".bsky.social",) * 17 + (".com", ".dev", ".net")
OTHER_TEXT = ("live now", "great stream", "hello chat", "gg", "nice play", "lol", "what a match", "brb")


SPECIALS = (COMMON_WORD, RARE_WORD, "bluesky", TAG, CJK_WORD, CYRILLIC_WORD, EMOJI)
"""What no word of any list may contain (lower-cased), so the special strings' frequencies are exactly controlled
("bluesky" keeps `PHRASE` from occurring by chance). CJK text is written without spaces, so no CJK list may contain
a character of `CJK_WORD` either."""


_SPECIAL_RE = re.compile("|".join(re.escape(special) for special in SPECIALS))


def has_special(word: str) -> bool:
    """Whether `word` contains one of `SPECIALS` (case-insensitive)."""
    return _SPECIAL_RE.search(word.lower()) is not None


def _check_vocabulary() -> None:
    """The special words must not occur inside any generated word, so their frequencies are exactly controlled."""
    pools = [w for words, _ in WORDS.values() for w in words]
    pools += [*TAGS, *DOMAINS, *NAMES, *HANDLE_WORDS, *OTHER_TEXT]
    for word in pools:
        if has_special(word):
            raise AssertionError(f"vocabulary word {word!r} contains one of the special words {SPECIALS}")


_check_vocabulary()

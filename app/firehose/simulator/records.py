"""The record makers: the `record` (and rkey) of every commit the generator creates, by collection.

Posts get text in the post's language with the searchable vocabulary injected at its rates
(`firehose.simulator.vocabulary`), facets with UTF-8 byte offsets, embeds, replies and langs; likes and reposts
point at recent posts; follows, blocks and mentions at popular accounts. Record keys are sorted as Jetstream sorts
them. Every maker draws only from the block PRNG it is handed, in a fixed order, so a record is a pure function of
the generator's seed and the event number.

What texts say comes from a `TextModel`: `SeedText` here (the seed profile's short per-language word lists, drawn
uniformly), or `firehose.simulator.realtext.RealText` (the real profile's Zipf vocabularies); how often posts reply
and embed, and likes and reposts carry a `via`, is the profile's `PostShape`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from firehose.simulator.clock import IsoClock
from firehose.simulator.encoding import b32_chars, tid
from firehose.simulator.identity import handle_for, handle_name
from firehose.simulator.mix import BLOCK, FOLLOW, LIKE, POST, PROFILE, REPOST, Kind
from firehose.simulator.vocabulary import (
    CJK_WORD,
    COMMON_WORD,
    COMMON_WORD_RATE,
    CYRILLIC_WORD,
    DOMAINS,
    EMOJI,
    EMOJI_RATE,
    EMOJIS,
    LANGUAGES,
    LOCAL_WORD_RATE,
    OTHER_TEXT,
    PHRASE,
    PHRASE_RATE,
    RARE_WORD,
    RARE_WORD_RATE,
    TAG,
    TAG_RATE,
    TAGS,
    WORDS,
)

_Record = dict[str, Any]
Maker = Callable[[int, bytes, random.Random, int, str], tuple[_Record, str]]
"""`maker(i, header, rng, created_us, did) -> (record, rkey)` for event `i` by `did`."""


class PostRef(NamedTuple):
    """What other records need to point at a generated post."""

    uri: str
    cid: str
    did: str


class Population(Protocol):
    """What the record makers need to know about the other accounts and their posts (the generator provides it)."""

    def popular_did(self, rng: random.Random) -> str:
        """A DID skewed towards popular accounts (follow, block and mention targets)."""
        ...

    def recent_post(self, i: int, rng: random.Random) -> PostRef:
        """A post made before event `i`."""
        ...


class TextModel(Protocol):
    """What the texts of records say: post text and facets, the languages of posts, and the other texts."""

    languages: tuple[tuple[str | None, float], ...]
    """Share of posts per language code (None: no `langs` field; "emoji": emoji only, langs `en`)."""

    def post_text(self, rng: random.Random, lang: str, *, allow_empty: bool) -> tuple[str, list[_Record]]:
        """The text of a post in `lang` and its facets (byte offsets into the UTF-8 text); at most 300 characters."""
        ...

    def words(self, rng: random.Random, lang: str, n: int) -> str:
        """`n` words in `lang` (link cards' titles and descriptions, list names, profile descriptions)."""
        ...

    def alt_text(self, rng: random.Random, lang: str) -> str:
        """The alt text of one image of a post in `lang` ("" for none)."""
        ...

    def emoji(self, rng: random.Random) -> str:
        """One emoji (display names)."""
        ...

    def domain(self, rng: random.Random) -> str:
        """The host of a link card's URL."""
        ...


class PostText:
    """A post's text as it is built: its pieces, its facets (UTF-8 byte offsets into the text) and its length."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.facets: list[_Record] = []
        self.nbytes = 0
        self.nchars = 0

    def add(self, piece: str, blen: int, feature: _Record | None = None, gap: str = " ") -> None:
        """Append `piece` (`blen` UTF-8 bytes) after `gap` (none at the start or after whitespace), with a facet
        over it when `feature` is given."""
        pieces = self.pieces
        if pieces and gap and not pieces[-1][-1:].isspace():
            pieces.append(gap)
            self.nbytes += 1
            self.nchars += 1
        if feature is not None:
            self.facets.append({"$type": "app.bsky.richtext.facet", "features": [feature],
                                "index": {"byteEnd": self.nbytes + blen, "byteStart": self.nbytes}})
        pieces.append(piece)
        self.nbytes += blen
        self.nchars += len(piece)

    def add_mentions(self, rng: random.Random, popular_did: Callable[[random.Random], str]) -> None:
        """One or two `@handle` mentions of popular accounts in 10% of posts (mostly at the start)."""
        rand = rng.random
        if rand() < 0.10:
            for _ in range(1 + (rand() < 0.3)):
                target_did = popular_did(rng)
                mention = "@" + handle_for(target_did)
                self.add(mention, len(mention), {"$type": "app.bsky.richtext.facet#mention", "did": target_did})

    def done(self) -> tuple[str, list[_Record]]:
        """The text and its facets."""
        return "".join(self.pieces), self.facets


def draw_specials(rng: random.Random, lang: str) -> list[tuple[str, int]]:
    """The searchable strings (and their UTF-8 bytes) a post in `lang` carries, each drawn at its rate."""
    rand = rng.random
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
    return specials


@dataclass(frozen=True)
class PostShape:
    """How often posts reply and embed, and likes and reposts carry a `via` (shares of posts or of records)."""

    reply_share: float = 0.32
    embed_share: float = 0.30
    via_share: float = 0.03


class SeedText:
    """The seed profile's texts: the word lists of `firehose.simulator.vocabulary`, drawn uniformly; every text
    but post text is English."""

    languages = LANGUAGES

    def __init__(self, population: Population) -> None:
        self._popular_did = population.popular_did
        self._word_bytes = {w: len(w.encode()) for words, _ in WORDS.values() for w in words}

    def words(self, rng: random.Random, lang: str, n: int) -> str:
        words, sep = WORDS["en"]
        choice = rng.choice
        return sep.join([choice(words) for _ in range(n)])

    def alt_text(self, rng: random.Random, lang: str) -> str:
        return self.words(rng, "en", rng.randint(2, 12)) if rng.random() < 0.3 else ""

    def emoji(self, rng: random.Random) -> str:
        return rng.choice(EMOJIS)

    def domain(self, rng: random.Random) -> str:
        return rng.choice(DOMAINS)

    def post_text(self, rng: random.Random, lang: str, *, allow_empty: bool) -> tuple[str, list[_Record]]:
        rand = rng.random
        words = WORDS[lang][0]
        if allow_empty and rand() < 0.15:
            return "", []
        target = 6 + int(274 * rand() ** 3)
        built = PostText()
        add = built.add  # every piece after a space, whatever the language (this profile's texts always were)
        word_bytes = self._word_bytes
        built.add_mentions(rng, self._popular_did)
        specials = draw_specials(rng, lang)
        insert_at = int(rand() * 8)
        choice = rng.choice
        count = 0
        while built.nchars < target:
            if count == insert_at and specials:
                for word, blen in specials:
                    add(word, blen)
                specials = []
            word = choice(words)
            if built.nchars + len(word) + 1 > 250:
                break
            add(word, word_bytes[word])
            count += 1
        for word, blen in specials:
            add(word, blen)
        if rand() < 0.08:
            domain = choice(DOMAINS)
            uri = f"https://{domain}/{self.words(rng, 'en', 1 + int(rand() * 3)).replace(' ', '-')}"
            shown = uri[8:] if len(uri) < 40 else uri[8:33] + "..."
            add(shown, len(shown), {"$type": "app.bsky.richtext.facet#link", "uri": uri})
        tags = [choice(TAGS) for _ in range(int(rand() * 3))] if rand() < 0.06 else []
        if rand() < TAG_RATE:
            tags.append(TAG)
        for tag in dict.fromkeys(tags):
            add("#" + tag, len(tag) + 1, {"$type": "app.bsky.richtext.facet#tag", "tag": tag})
        if rand() < EMOJI_RATE:
            add(EMOJI, 3)
        elif rand() < 0.12:
            emoji = choice(EMOJIS)
            add(emoji, len(emoji.encode()))
        return built.done()


class RecordMaker:
    """Makes the record of each commit-create kind of a mix (`makers[k]` for mix entry k; None for others)."""

    def __init__(self, population: Population, iso: IsoClock, mix: tuple[Kind, ...], text: TextModel,
                 shape: PostShape) -> None:
        self._popular_did = population.popular_did
        self._recent_post = population.recent_post
        self._iso = iso
        self._text = text
        self._shape = shape
        self._lang_codes = [code for code, _ in text.languages]
        self._lang_cum = _cumulative([share for _, share in text.languages])
        self.makers = self._build_makers(mix)

    def _build_makers(self, mix: tuple[Kind, ...]) -> list[Maker | None]:
        by_collection: dict[str, Maker] = {
            LIKE: self._like, POST: self._post, REPOST: self._repost, FOLLOW: self._follow, BLOCK: self._block,
            PROFILE: self._profile, "app.bsky.feed.threadgate": self._threadgate,
            "app.bsky.feed.postgate": self._postgate, "app.bsky.graph.listitem": self._listitem,
            "app.bsky.graph.list": self._list, "app.bsky.graph.starterpack": self._starterpack,
            "app.bsky.graph.listblock": self._listblock, "chat.bsky.actor.declaration": self._chat_declaration,
            "place.stream.broadcast.origin": self._stream_origin, "place.stream.chat.message": self._stream_chat,
            "fyi.unravel.frontpage.vote": self._frontpage_vote, "sh.tangled.feed.star": self._tangled_star,
            "app.bsky.actor.status": self._status,
        }
        return [by_collection.get(kind.collection) if kind.kind == "commit" and kind.collection else None
                for kind in mix]

    def _rkey(self, created: int, header: bytes) -> str:
        return tid(created, header[61] & 31)

    def _subject_record(self, collection: str, i: int, header: bytes, rng: random.Random, created: int
                        ) -> tuple[_Record, str]:
        ref = self._recent_post(i, rng)
        record: _Record = {"$type": collection, "createdAt": self._iso(created),
                           "subject": {"cid": ref.cid, "uri": ref.uri}}
        if rng.random() < self._shape.via_share:
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

    def _profile(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        record: _Record = {"$type": PROFILE, "avatar": self._blob(rng, "image/jpeg", 20_000, 1_000_000)}
        if rng.random() < 0.5:
            record["banner"] = self._blob(rng, "image/jpeg", 50_000, 2_000_000)
        record["createdAt"] = self._iso(created - int(rng.random() * 500 * 86_400e6))
        record["description"] = self._text.words(rng, "en", rng.randint(0, 25))
        record["displayName"] = handle_name(did).title() + (self._text.emoji(rng) if rng.random() < 0.2 else "")
        if rng.random() < 0.2:
            ref = self._recent_post(i, rng)
            record["pinnedPost"] = {"cid": ref.cid, "uri": ref.uri}
        return record, "self"

    # -- posts ------------------------------------------------------------------------------------------------

    def _post(self, i: int, header: bytes, rng: random.Random, created: int, did: str) -> tuple[_Record, str]:
        rand = rng.random
        lang = self._lang_codes[_pick(self._lang_cum, rand())]
        text_lang = lang or "en"
        embed = self._embed(i, rng, text_lang) if rand() < self._shape.embed_share else None
        text, facets = self._text.post_text(rng, text_lang, allow_empty=embed is not None)
        record: _Record = {"$type": POST, "createdAt": self._iso(created)}
        if embed is not None:
            record["embed"] = embed
        if facets:
            record["facets"] = facets
        if lang is not None:
            record["langs"] = ["en"] if lang == "emoji" else ([lang, "en"] if rand() < 0.03 else [lang])
        if rand() < self._shape.reply_share:
            parent = self._recent_post(i, rng)
            root = parent if rand() < 0.5 else self._recent_post(i - 200_000, rng)
            record["reply"] = {"parent": {"cid": parent.cid, "uri": parent.uri},
                               "root": {"cid": root.cid, "uri": root.uri}}
        record["text"] = text
        return record, self._rkey(created, header)

    def _embed(self, i: int, rng: random.Random, lang: str) -> _Record:
        """A post embed: images 55%, external link 20%, quote 11%, video 8%, quote with media 6%."""
        u = rng.random()
        if u < 0.55:
            return self._images(rng, lang)
        if u < 0.75:
            domain = self._text.domain(rng)
            external: _Record = {"description": self._text.words(rng, lang, rng.randint(0, 30))}
            if rng.random() < 0.6:
                external["thumb"] = self._blob(rng, "image/jpeg", 10_000, 900_000)
            external["title"] = self._text.words(rng, lang, rng.randint(2, 10)).title()
            external["uri"] = f"https://{domain}/{self._text.words(rng, 'en', 3).replace(' ', '-')}"
            return {"$type": "app.bsky.embed.external", "external": external}
        if u < 0.86:
            ref = self._recent_post(i, rng)
            return {"$type": "app.bsky.embed.record", "record": {"cid": ref.cid, "uri": ref.uri}}
        if u < 0.94:
            return {"$type": "app.bsky.embed.video", "aspectRatio": {"height": 1920, "width": 1080},
                    "video": self._blob(rng, "video/mp4", 500_000, 50_000_000)}
        ref = self._recent_post(i, rng)
        return {"$type": "app.bsky.embed.recordWithMedia", "media": self._images(rng, lang),
                "record": {"$type": "app.bsky.embed.record", "record": {"cid": ref.cid, "uri": ref.uri}}}

    def _images(self, rng: random.Random, lang: str) -> _Record:
        images = []
        for _ in range(1 + int(rng.random() ** 3 * 4)):
            alt = self._text.alt_text(rng, lang)
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
                 "description": self._text.words(rng, "en", rng.randint(0, 15)),
                 "name": self._text.words(rng, "en", rng.randint(1, 4)).title(),
                 "purpose": rng.choice(("app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist"))},
                self._rkey(created, header))

    def _starterpack(self, i: int, header: bytes, rng: random.Random, created: int, did: str
                     ) -> tuple[_Record, str]:
        return ({"$type": "app.bsky.graph.starterpack", "createdAt": self._iso(created), "feeds": [],
                 "list": self._at_uri(did, "app.bsky.graph.list", created, rng),
                 "name": self._text.words(rng, "en", rng.randint(1, 4)).title(), "updatedAt": self._iso(created)},
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
                 "streamer": self._popular_did(rng), "text": rng.choice(OTHER_TEXT)}, self._rkey(created, header))

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


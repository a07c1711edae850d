"""A small language guesser for the `is_language` check, with no model and no dependency.

Why not langdetect/fasttext: the check only has to tell "answered in German" from "answered in
English" for a rule like "reply in German to my grandmother"; a dependency (and a model file)
for that is not worth it. How: the writing system decides first (Cyrillic, Greek, Arabic,
Hebrew, Devanagari, Thai, Hangul, kana, Han); for Latin script, the language whose common
function words make up the most of the text wins.

Limits, on purpose:
- Latin-script languages outside `STOPWORDS` come back as "unknown" or as their nearest
  neighbour (Catalan may read as Spanish, Afrikaans as Dutch).
- Cyrillic is always "ru", Arabic script always "ar" (Ukrainian, Bulgarian, Persian, Urdu are
  not told apart); Han without kana is "zh".
- Short texts (fewer than ~3 function words) and code come back as "unknown".
- A mixed-language answer gets the language of the majority of its function words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# The most frequent function words of each language: articles, pronouns, prepositions,
# conjunctions, auxiliaries. Words shared by several languages ("a", "de", "la") still help
# because the totals, not single words, decide.
STOPWORDS: dict[str, set[str]] = {
    "en": set("the and of to is in that it for you was with on as are be this have not but they "
              "at from or by an will my all would there their what so if about which can when your "
              "we he she has been were more do does also than them these some its".split()),
    "de": set("der die das und ist nicht zu den von mit sich des auf für im dem ein eine einen einer "
              "als auch es an werden aus er hat dass sie nach wird bei noch wie um oder ich wir ihr "
              "sind war aber nur vor zur über so kann mehr".split()),
    "fr": set("le la les de des et est un une du en que qui dans pour pas sur au avec ce ces il elle "
              "ne se sont nous vous par plus mais ou son sa leur aux été être je tu on cette comme "
              "très".split()),
    "es": set("el la los las de del y que en un una es por con para se no al lo como más pero sus su "
              "le ya o este esta son entre cuando muy sin sobre también me hay porque está yo tu "
              "nosotros".split()),
    "it": set("il lo la gli le di del della e che è un una per non con si da in sono al alla come "
              "più ma anche questo questa ci io tu lui lei noi voi loro nel nella gli degli delle "
              "essere".split()),
    "pt": set("o a os as de do da dos das e que em um uma é para com não por se no na nos nas mais "
              "como mas ao ele ela eles foi são está você eu também muito já seu sua".split()),
    "nl": set("de het een en van is dat die in te niet op voor met zijn er aan ook als bij maar om "
              "dan wat nog ze hij zij wij jullie kan wordt worden door naar uit over deze dit".split()),
}

LANGUAGES = tuple(STOPWORDS) + ("ru", "el", "ar", "he", "hi", "th", "ko", "ja", "zh")

# Script name (as it appears in unicodedata names) -> language reported for it.
_SCRIPTS = (
    ("CYRILLIC", "ru"), ("GREEK", "el"), ("ARABIC", "ar"), ("HEBREW", "he"), ("DEVANAGARI", "hi"),
    ("THAI", "th"), ("HANGUL", "ko"), ("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("CJK", "zh"),
)

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _script_counts(text: str) -> Counter:
    counts: Counter = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        for script, lang in _SCRIPTS:
            if name.startswith(script):
                counts[lang] += 1
                break
        else:
            if name.startswith("LATIN"):
                counts["latin"] += 1
    return counts


def detect_language(text: str, min_hits: int = 3) -> str:
    """ISO 639-1 code of the text's language, or "unknown"."""
    scripts = _script_counts(text)
    letters = sum(scripts.values())
    if not letters:
        return "unknown"
    # Japanese mixes kana with Han: any real amount of kana makes it Japanese, not Chinese.
    if scripts["ja"] and scripts["ja"] >= 0.1 * (scripts["ja"] + scripts["zh"]):
        scripts["ja"] += scripts.pop("zh", 0)
    script, count = max(scripts.items(), key=lambda kv: kv[1])
    if script != "latin" and count >= 0.5 * letters:
        return script
    words = [w.lower() for w in _WORD.findall(text)]
    hits = {lang: sum(w in stop for w in words) for lang, stop in STOPWORDS.items()}
    best = max(hits, key=hits.get)
    ranked = sorted(hits.values(), reverse=True)
    if ranked[0] < min_hits or ranked[0] == ranked[1]:
        return "unknown"
    return best

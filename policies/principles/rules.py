"""Principles without a capable teacher: read explicit rule statements and corrections.

The small local model cannot be trusted to write principles, but the feedback that matters most
is often explicit: "from now on, no emojis in my work emails", "when I ask about gardening,
begin your answer with 'Green thumb:'", "don't use emojis when drafting emails to my boss".
These patterns give the domain (the condition) and the effect (the instruction), and an obvious
programmatic check when there is one. A correction with no rule in it becomes a rewrite
principle: specific when the difference is plain (emojis removed, much shorter, a new opening
line), generic and low-confidence otherwise. Anything else yields None: nothing to propose.

Limits: English only; one rule per feedback; a domain phrased unusually ("as regards X") is
missed and the rule is proposed for every request, with lower confidence, for review.
"""

from __future__ import annotations

import re

from policies.principles.model import GLOBAL_DOMAIN, FeedbackInput, Principle

# Emojis common in chat answers; "no emojis" rules are checked (and revisions repaired) with them.
COMMON_EMOJIS = ["😀", "😃", "😄", "😁", "😆", "😅", "😂", "🤣", "😊", "😉", "😍", "🥰", "😘", "😎", "🤩",
                 "🥳", "😢", "😭", "🙂", "🙏", "👍", "👏", "🙌", "💪", "🔥", "✨", "🎉", "🎊", "❤", "💯",
                 "✅", "🚀", "⭐", "🌟", "💡", "📌", "👉", "😜", "🤔", "👋"]
LANGUAGE_NAMES = {"english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
                  "portuguese": "pt", "dutch": "nl", "russian": "ru", "greek": "el", "arabic": "ar",
                  "hebrew": "he", "hindi": "hi", "thai": "th", "korean": "ko", "japanese": "ja", "chinese": "zh"}

_TEMPORAL = re.compile(r"^(?:(?:ok(?:ay)?|also|and|hey|so|but|please|btw)[,!]?\s+)*"
                       r"(?:from now on|going forward|in (?:the )?future|from here on(?: out)?|next time|"
                       r"for the future|in general)\s*[,:-]?\s*", re.I)
_POLITE = re.compile(r"^(?:(?:ok(?:ay)?|also|hey|please|btw|and)[,!]?\s+)+|"
                     r"\s*[,;]?\s*(?:please|thanks|thank you|thx|ok\??)?[\s.!]*$", re.I)
_WANT = re.compile(r"^(?:i (?:want|need|would like|'d like) you to|i'd prefer (?:if )?you|can you|could you|"
                   r"you should|you must|make sure (?:to|that you)|remember to)\s+", re.I)
_RULE_START = re.compile(r"^(?:don't|do not|dont|never|always|stop|no|avoid|use|begin|start|open|end|finish|"
                         r"close|sign off|answer|respond|reply|write|keep|be|include|add|mention|call|format|"
                         r"put|say|refer|give|make|limit)\b", re.I)
_COND_FIRST = re.compile(r"^(?:when(?:ever)?|every time|each time|if|for)\s+(?P<cond>[^,]{3,120}),\s*(?P<rest>.+)$",
                         re.I | re.S)
_COND_LAST = re.compile(r"^(?P<rest>.+?)\s+(?:when(?:ever)?|every time|each time|if)\s+(?P<cond>.{3,120})$",
                        re.I | re.S)
_IN_DOMAIN = re.compile(r"^(?P<rest>.+?)\s+(?:in|for|on)\s+(?P<det>my|our|any|all|the|your)?\s*(?P<dom>[^,]{3,80})$",
                        re.I | re.S)
# "Keep answers about recipes under 100 words": the answers' subject is the domain.
_ABOUT_DOMAIN = re.compile(r"^(?P<pre>.*?\b(?:answers?|responses?|replies|explanations?))\s+(?:about|on|regarding|to questions about|for questions about)\s+"
                           r"(?P<dom>[^,]{3,60}?)(?P<post>(?:\s+(?:under|below|in|with|to|shorter|at most|without|no more|fewer|short|brief)\b.*)?)$",
                           re.I | re.S)
# "For my LinkedIn posts never use hashtags", "in stories for my kids, no scary parts".
_FOR_DOMAIN = re.compile(r"^(?:for|in|with|on)\s+(?:all\s+|any\s+|every\s+)?(?:(?P<det>my|our|the|your)\s+)?(?P<dom>[\w' -]{3,60}?)\s*,?\s+"
                         r"(?P<rest>(?:please\s+)?(?:always|never|don't|do not|dont|no|use|keep|avoid|include|start|begin|end|"
                         r"write|make|give|add|skip|put|format|be|stick|sign|stop)\b.+)$", re.I | re.S)
_MAX_WORDS = re.compile(r"\b(?:under|below|at most|no more than|fewer than|less than|max(?:imum)?(?: of)?|within)\s+(\d{1,4})\s+words?\b", re.I)
_DISCOURSE = re.compile(r"^(?:example|instance|the record|reference|context|clarity|now|once|the most part|what it'?s worth|sure|real)$", re.I)
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
# Words that make a rule stated without a domain mean every request.
_SAYS_GLOBAL = re.compile(r"\b(?:always|never|any(?:thing| answer| response)?|all (?:answers|responses|replies|chats|requests|"
                          r"conversations)|every(?:thing| answer| response| time)?|in general|whatever|no matter)\b", re.I)
_QUOTED = re.compile(r"[\"“](.+?)[\"”]|(?<!\w)['‘](.+?)['’](?!\w)", re.S)
_NEG = re.compile(r"^(?:do not|don't|dont|never|no|stop|avoid|without)\b", re.I)
# "Finish emails to my boss with 'X'": the object between the verb and "with" is the domain.
_OBJECT_DOMAIN = re.compile(r"^(?:always\s+)?(?:begin|start|open|end|finish|close|sign off|conclude)\s+(?P<dom>.{3,80}?)\s+with\s+[\"'“‘]",
                            re.I)
_ANSWER_OBJECT = re.compile(r"^(?:your |the |all |any |every )?(?:answers?|responses?|replies|messages?|it|them|each one)$",
                            re.I)
_FORMAT_VERB = re.compile(r"\b(?:answer|respond|reply|write|format|speak|talk|explain|list)\w*$", re.I)
_GENERAL = re.compile(r"\b(?:always|never|don't|do not|dont|stop|no|avoid|every|each|any|all|whenever|when|if|"
                      r"answers|responses|replies|in general|instead of|rather than)\b", re.I)
_GLOBALISH = re.compile(r"^(?:answers?|responses?|replies|messages?|everything|general|all of them|chats?)$", re.I)

_STOP_VERB = {"using": "use", "writing": "write", "making": "make", "adding": "add", "putting": "put",
              "starting": "start", "ending": "end", "saying": "say", "including": "include", "giving": "give",
              "apologizing": "apologize", "apologising": "apologise", "asking": "ask", "repeating": "repeat"}


def _first_person_to_user(text: str) -> str:
    """Rewrite the user's "I/my/me" for the chatbot's system prompt: "the user ...".
    Quoted text is left alone: it is what the answer must say."""
    parts = re.split(r"(\"[^\"]*\"|“[^”]*”|(?<!\w)'[^']*'(?!\w)|‘[^’]*’)", text)
    return "".join(p if i % 2 else _person(p) for i, p in enumerate(parts))


def _person(t: str) -> str:
    t = re.sub(r"\bI am\b|\bI'm\b", "the user is", t)
    t = re.sub(r"\bI\b", "the user", t)
    t = re.sub(r"\bmy\b", "the user's", t, flags=re.I)
    t = re.sub(r"\bme\b", "the user", t, flags=re.I)
    return re.sub(r"\bthe user (ask|want|need|write|send|talk|say)\b", r"the user \1s", t)


def _domain_from_condition(cond: str) -> str:
    """'I ask about gardening' -> 'gardening'; 'drafting emails to my boss' stays as it is."""
    d = cond.strip().rstrip(".")
    d = re.sub(r"^(?:I|we)\s+(?:ask|am asking|'m asking)\s+(?:you\s+)?(?:about|for|regarding)\s+", "", d, flags=re.I)
    d = re.sub(r"^(?:I|we)\s+(?:ask|want|need)\s+(?:you\s+)?(?:to\s+)?", "", d, flags=re.I)
    d = re.sub(r"^(?:you(?:'re| are)?|I(?:'m| am)?|we(?:'re| are)?)\s+", "", d, flags=re.I)
    d = re.sub(r"^(?:it's|it is)\s+(?:about\s+)?|^(?:talking|asking)\s+about\s+|^(?:it comes to|dealing with)\s+",
               "", d, flags=re.I)
    return d.strip() or GLOBAL_DOMAIN


def _imperative(effect: str) -> str:
    """'no emojis' -> 'Do not use emojis'; "don't X" -> 'Do not X'; 'stop adding X' -> 'Do not add X'."""
    e = effect.strip().rstrip(".!")
    e = re.sub(r"^always\s+", "", e, flags=re.I)
    m = re.match(r"^stop\s+(\w+)\b(.*)$", e, re.I | re.S)
    if m and m.group(1).lower() in _STOP_VERB:
        e = f"do not {_STOP_VERB[m.group(1).lower()]}{m.group(2)}"
    e = re.sub(r"^(?:don't|dont|do not)\s+", "do not ", e, flags=re.I)
    e = re.sub(r"^no more\s+|^no\s+", "do not use ", e, flags=re.I)
    e = re.sub(r"^without\s+", "do not use ", e, flags=re.I)
    return e[:1].upper() + e[1:]


def _quoted(text: str) -> list[str]:
    return [a or b for a, b in _QUOTED.findall(text) if (a or b).strip()]


def checks_for(effect: str) -> list[str]:
    """The programmatic checks an effect obviously implies (none when unsure)."""
    e, low = effect, effect.lower()
    neg = bool(_NEG.match(low))
    quotes = _quoted(e)
    out: list[str] = []

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    if quotes and re.search(r"\b(?:begin|start|open|preface|prefix)\w*\b.*\bwith\b", low):
        out.append(("doesnt_start_with " if neg else "starts_with ") + q(quotes[0]))
    elif quotes and re.search(r"\b(?:end|finish|close|conclude|sign off)\w*\b.*\bwith\b", low):
        if not neg:
            out.append("ends_with " + q(quotes[0]))
    elif quotes and re.search(r"\b(?:instead of|rather than)\b", low) and len(quotes) >= 2:
        out.append(f"contains_all_strings [{q(quotes[0])}]")
        out.append(f"contains_none_strings [{q(' ' + quotes[1].strip() + ' ')}]")
    elif quotes and neg:
        out.append("contains_none_strings [" + ", ".join(q(s) for s in quotes) + "]")
    elif quotes and re.search(r"\b(?:use|include|mention|say|add|call|sign)\b", low):
        out.append("contains_all_strings [" + ", ".join(q(s) for s in quotes) + "]")
    if neg and re.search(r"\bemoji|\bemoticon|\bsmiley", low):
        out.append("contains_none_strings [" + ", ".join(q(s) for s in COMMON_EMOJIS) + "]")
    if neg and "hashtag" in low:
        out.append('contains_none_strings ["#"]')
    if neg and re.search(r"exclamation (?:mark|point)", low):
        out.append('contains_none_strings ["!"]')
    words = _MAX_WORDS.search(low)
    if words and not neg:
        out.append(f"max_words {int(words.group(1))}")
    elif not neg and re.search(r"\b(?:concise|shorter|brief|briefer|short|less verbose|fewer words|to the point)\b", low):
        out.append("length")
    lang = re.search(r"\b(?:in|into)\s+(" + "|".join(LANGUAGE_NAMES) + r")\b", low)
    if lang and not neg and re.search(r"\b(?:answer|respond|reply|write|speak|talk)\w*\b", low):
        out.append(f'is_language "{LANGUAGE_NAMES[lang.group(1)]}"')
    return out


def _source(text: str, kind: str, positive: bool | None) -> str:
    if kind == "correction":
        return "rewrite"
    if positive or (positive is None and re.search(r"\b(?:thanks|thank you|love|great|perfect|keep (?:doing|it up))\b",
                                                   text, re.I) and not _NEG.search(text)):
        return "kudos"
    return "critique"


def parse_rule(statement: str) -> tuple[str, str, str] | None:
    """(text, domain, effect) of an explicit rule statement, or None when it states no rule."""
    s = " ".join(statement.strip().split())
    had_temporal = bool(_TEMPORAL.match(s))
    s = _TEMPORAL.sub("", s)
    s = _POLITE.sub("", s).strip().rstrip(".!")
    s = _WANT.sub("", s)
    if len(s) < 4:
        return None
    m = _FOR_DOMAIN.match(s)
    if m and not _GLOBALISH.match(m.group("dom").strip()):
        dom, effect = m.group("dom").strip(), m.group("rest").strip()
        det = (m.group("det") or "").lower()
        scope = f"{det} {dom}" if det in ("my", "our") else dom
        return _user(f"For {scope}, {_imperative(effect)[:1].lower()}{_imperative(effect)[1:]}"), scope, _effect(effect)
    m = _COND_FIRST.match(s)
    if m and _DISCOURSE.match(m.group("cond").strip()):
        m = None  # "For example, ...", "For the record, ...": no condition
    if m:
        cond, effect = m.group("cond").strip(), _WANT.sub("", m.group("rest").strip())
        domain = _domain_from_condition(cond)
        lead = "For" if s.lower().startswith("for ") else "When"
        text = f"{lead} {_first_person_to_user(cond)}, {_imperative(effect)[:1].lower()}{_imperative(effect)[1:]}"
        return _user(text), domain, _effect(effect)
    # An imperative alone ("write a poem about cats") is a request, not a standing rule: it also
    # needs a word that makes it general, or the start/end-with-a-marker shape.
    general = _GENERAL.search(s) or _OBJECT_DOMAIN.match(s)
    if not (had_temporal or (_RULE_START.match(s) and general)):
        return None
    m = _ABOUT_DOMAIN.match(s)
    if m and not _GLOBALISH.match(m.group("dom").strip()):
        dom = m.group("dom").strip()
        effect = (m.group("pre") + m.group("post")).strip()
        return _user(s), dom, _effect(effect)
    m = _COND_LAST.match(s)
    if m:
        effect, cond = m.group("rest").strip(), m.group("cond").strip()
        text = f"{_imperative(effect)} when {_first_person_to_user(cond)}"
        return _user(text), _domain_from_condition(cond), _effect(effect)
    m = _OBJECT_DOMAIN.match(s)
    if m and not _ANSWER_OBJECT.match(m.group("dom").strip()):
        return _user(_imperative(s)), _domain_from_condition(m.group("dom")), _effect(s)
    m = _IN_DOMAIN.match(s)
    if m and not _FORMAT_VERB.search(m.group("rest").strip()) and m.group("dom").lower() not in LANGUAGE_NAMES and not re.match(r"^(?:\d|one|two|three|a |an )", m.group("dom")):
        effect, dom = m.group("rest").strip(), m.group("dom").strip()
        if _GLOBALISH.match(dom) or (m.group("det") or "").lower() == "all":
            return _user(_imperative(effect)), GLOBAL_DOMAIN, _effect(effect)
        return _user(f"{_imperative(effect)} in {dom}"), dom, _effect(effect)
    return _user(_imperative(s)), GLOBAL_DOMAIN, _effect(s)


def _effect(effect: str) -> str:
    """The effect as C3PO writes it: lower-case, without 'always'/'please'."""
    e = re.sub(r"^(?:always|please)\s+", "", effect.strip().rstrip(".!"), flags=re.I)
    return e[:1].lower() + e[1:] if not e.startswith("I ") else e


def _user(text: str) -> str:
    return _first_person_to_user(text)


_EMOJI_RE = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B50\u2764]")


def _from_correction(fb: FeedbackInput) -> Principle:
    """A rewrite principle from the difference between our answer and the user's correction."""
    domain = f"requests like: {fb.prompt.strip()[:80]}" if fb.prompt.strip() else GLOBAL_DOMAIN
    ours, theirs = fb.answer.strip(), fb.text.strip()
    base = dict(domain=domain, source="rewrite", evidence=[fb.evidence], proposer="rules")
    if _EMOJI_RE.search(ours) and not _EMOJI_RE.search(theirs):
        used = sorted(set(_EMOJI_RE.findall(ours)))
        emojis = list(dict.fromkeys(used + COMMON_EMOJIS))
        checks = ["contains_none_strings [" + ", ".join(f'"{e}"' for e in emojis) + "]"]
        return Principle(text="Do not use emojis in answers to requests like this one", effect="no emojis",
                         checks=checks, confidence=0.4, **base)
    first = theirs.splitlines()[0].strip() if theirs else ""
    if first.endswith(":") and len(first) <= 40 and not ours.lower().startswith(first.lower()):
        return Principle(text=f"Begin answers to requests like this one with '{first}'",
                         effect=f"begin with '{first}'", checks=[f'starts_with "{first}"'], confidence=0.4, **base)
    if ours and len(theirs) < 0.6 * len(ours):
        return Principle(text="Be more concise in answers to requests like this one", effect="be more concise",
                         checks=["length"], confidence=0.4, **base)
    return Principle(text="Answer requests like this one the way the user's correction does",
                     effect="follow the user's corrected answer", confidence=0.2, **base)


def states_global(text: str) -> bool:
    """Does a rule stated without a domain say it means every request ("never use emojis",
    "always answer in French")? Otherwise it is taken to mean requests like the one it came from."""
    return bool(_SAYS_GLOBAL.search(text))


def parse_feedback(text: str) -> tuple[str, str, str] | None:
    """The rule a feedback states: the whole text, or one of its sentences ("Too long. Keep
    answers about recipes under 100 words."), a rule with a stated domain first."""
    parts = [text] + [p for p in _SENTENCES.split(text.strip()) if p.strip() and p.strip() != text.strip()]
    rules = [r for r in (parse_rule(p) for p in parts) if r is not None]
    return next((r for r in rules if r[1] != GLOBAL_DOMAIN), rules[0] if rules else None)


def propose_by_rules(fb: FeedbackInput) -> Principle | None:
    """The rule reader behind `propose_principle` when no capable teacher is configured."""
    rule = parse_feedback(fb.text) if fb.kind != "correction" else None
    if rule is not None:
        text, domain, effect = rule
        return Principle(text=text, domain=domain, effect=effect, source=_source(fb.text, fb.kind, fb.positive),
                         checks=checks_for(effect), evidence=[fb.evidence], proposer="rules",
                         confidence=0.7 if domain != GLOBAL_DOMAIN else 0.5)
    if fb.kind == "correction":
        return _from_correction(fb)
    low = fb.text.lower()
    # Common critiques that name no rule still have one obvious reading.
    if re.search(r"\btoo (?:long|verbose|wordy)\b|\bshorter\b", low):
        return Principle(text="Be more concise", domain=GLOBAL_DOMAIN, effect="be more concise",
                         source="critique", checks=["length"], evidence=[fb.evidence], proposer="rules",
                         confidence=0.3)
    return None

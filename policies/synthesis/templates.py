"""In-scope and near-scope prompts for a domain written from templates, when no capable teacher is configured.

A 135M model cannot write a good prompt set, so instead the domain phrase is parsed into an
artefact ("text messages", with an audience "to my girlfriend Maddie") or a subject
("gardening", "HIV/AIDS in Rwanda"); in-scope prompts combine it with request templates and
topics; near-scope prompts swap the head noun or the audience for a nearby one (work emails ->
text messages, emails to a friend; gardening -> farming, cooking). The vocabulary (artefacts,
subjects and their neighbours, templates) lives in data/templates.json.

Limits of the template generator, worth knowing before trusting its numbers:
- it knows the neighbours of a few dozen common artefacts and subjects; for an unknown subject
  the near-scope set falls back to swapping a place ("in Rwanda" -> "in Kenya") or, failing
  that, to other pool topics, which makes "near" scope closer to "out of" scope;
- prompts are grammatical but formulaic, and less varied than a capable teacher's;
- a domain phrased unusually ("the first sentence of any reply when ...") parses badly: the
  whole phrase then becomes the subject.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from policies.synthesis.pool import DATA, POOL_TEXT

_V = json.loads((DATA / "templates.json").read_text(encoding="utf-8"))
# Artefacts a request can ask to write, with the nearby artefacts that make near-scope prompts.
ARTEFACT_NEIGHBOURS: dict[str, list[str]] = _V["artefact_neighbours"]
_CREATIVE = frozenset(_V["creative"])
PURPOSES: list[str] = _V["purposes"]
THEMES: list[str] = _V["themes"]
AUDIENCES: list[str] = _V["audiences"]
PLACES: list[str] = _V["places"]
# Subjects the generator knows: a few concrete topics each, and neighbouring subjects.
SUBJECTS: dict[str, tuple[list[str], list[str]]] = {k: (v["topics"], v["neighbours"]) for k, v in _V["subjects"].items()}
SUBJECT_TEMPLATES: list[str] = _V["subject_templates"]
# Phrasings that read well around any noun phrase ("HIV/AIDS in Rwanda", "good finance books").
GENERIC_SUBJECT_TEMPLATES: list[str] = _V["generic_subject_templates"]
FRAMINGS: list[str] = _V["framings"]
# Subjects whose requests are tasks rather than questions get their own templates.
TASK_TEMPLATES: dict[str, list[str]] = _V["task_templates"]
# Qualifiers that turn an unknown "X books" / "X news" into a neighbour ("sports news").
QUALIFIERS: list[str] = _V["qualifiers"]
WRITE_TEMPLATES: list[str] = _V["write_templates"]
CREATIVE_TEMPLATES: list[str] = _V["creative_templates"]
RELATIONS: list[str] = _V["relations"]
# Words after a subject that do not change it: "Python coding" is Python, "calculus questions" calculus.
_GENERIC_NOUNS = frozenset(_V["generic_nouns"])
_PLURAL_ONLY = frozenset(_V["plural_only"])
_DROP_SUFFIX = frozenset(_V["drop_suffix"])

_LEADS = re.compile(
    r"^(?:(?:when|whenever|if)\s+)?(?:i\s+ask\s+(?:you\s+)?(?:about|for)\s+)?"
    r"(?P<verb>writing|write|composing|drafting|responding to|replying to|commenting on|talking about|"
    r"discussing|answering (?:any )?questions (?:about|related to|on)|answering|explaining concepts (?:in|related to)|"
    r"explaining|giving advice on|advice on|questions about|reporting on|reviewing|describing|doing)?\s*",
    re.I)
_AUDIENCE = re.compile(r"\s+(?P<aud>(?:to|for|from|with)\s+(?:my|the|a|an|our|people|someone|friends|"
                       r"colleagues|family|coworkers|[A-Z][a-z]+)\b.*)$")
_PLACE = re.compile(r"\s+in\s+(?P<place>[A-Z][\w-]+(?:\s+[A-Z][\w-]+)*)\s*$")


@dataclass
class DomainParts:
    """A domain phrase read as a writing task (an artefact, maybe with an audience) or a subject."""

    kind: str  # "artefact" or "subject"
    head: str  # the artefact ("email", "text message") or the subject ("gardening")
    obj: str  # in-scope object phrase: "a text message", "song lyrics", "a comment on social media"
    audience: str | None = None  # "to my boss Jared", "from friends"
    lead: str = ""  # "responding to", "commenting on", ...
    core: str = ""  # the domain without its leading verb and audience


def _singular(word: str) -> str:
    if word.lower() in _PLURAL_ONLY:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us")) and len(word) > 2:
        return word[:-1]
    return word


def _a(phrase: str) -> str:
    if phrase.split()[-1].lower() in _PLURAL_ONLY:
        return phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def parse_domain(domain: str) -> DomainParts:
    text = re.sub(r"\([^)]*\)", "", domain).strip().rstrip(".")
    m = _LEADS.match(text)
    lead = (m.group("verb") or "").lower() if m else ""
    rest = text[m.end():] if m else text
    rest = re.sub(r"^(?:specific|any|some|all|an?|the)\s+", "", rest, flags=re.I).strip() or text
    audience, core = None, rest
    am = _AUDIENCE.search(rest)
    if am:
        audience, core = am.group("aud").strip(), rest[: am.start()].strip()
    words = core.split()
    singular = [_singular(w).lower() for w in words]
    # Longest artefact name first, so "text message" wins over "message".
    for art in sorted(ARTEFACT_NEIGHBOURS, key=len, reverse=True):
        n = len(art.split())
        for i in range(len(singular) - n + 1):
            if " ".join(singular[i:i + n]) == art:
                before = words[:i]
                after = [w for w in words[i + n:] if w.lower() not in _DROP_SUFFIX]
                head_words = [_singular(w) for w in words[i:i + n]]
                # "Slack message DMs" -> "Slack message DM"; "comments on social media" keeps "on social media".
                after = [_singular(w) if j == 0 and not w[0].islower() else w for j, w in enumerate(after)]
                obj = " ".join(before + head_words + after)
                return DomainParts("artefact", art, _a(obj), audience, lead, core)
    if lead in ("writing", "write", "composing", "drafting") and words:
        obj = " ".join(words[:-1] + [_singular(words[-1])])
        return DomainParts("artefact", _singular(words[-1]).lower(), _a(obj), audience, lead, core)
    return DomainParts("subject", core, core, audience, lead, core)


def _known_subject(subject: str) -> str | None:
    """The SUBJECTS entry this subject is, if any: the key itself, or the key with generic nouns."""
    low = subject.lower()
    for name in sorted(SUBJECTS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", low):
            rest = re.sub(rf"\b{re.escape(name)}\b", " ", low).split()
            if all(w in _GENERIC_NOUNS for w in rest):
                return name
    return None


def _subject_prompts(subject: str, n: int, rng: random.Random) -> list[str]:
    known = _known_subject(subject)
    out: list[str] = []
    if known:
        for template in TASK_TEMPLATES.get(known, SUBJECT_TEMPLATES):
            for topic in SUBJECTS[known][0]:
                p = template.format(topic=topic)
                if known in TASK_TEMPLATES or rng.random() < 0.6:
                    out.append(p)
                else:  # name the subject now and then, so prompts with and without it both occur
                    out.append(f"A {known} question: {p if p.startswith(('I ', 'I' + chr(39))) else p[0].lower() + p[1:]}")
    else:
        for template in GENERIC_SUBJECT_TEMPLATES:
            p = template.format(subject=subject)
            out += [f + (p[0].upper() + p[1:]) for f in FRAMINGS]
    rng.shuffle(out)
    return _dedupe(out)[:n]


def _artefact_prompts(obj: str, creative: bool, n: int, rng: random.Random) -> list[str]:
    templates, fills = (CREATIVE_TEMPLATES, THEMES) if creative else (WRITE_TEMPLATES, PURPOSES)
    out = [t.format(obj=obj, purpose=p) for t in templates for p in fills]
    rng.shuffle(out)
    return _dedupe(out)[:n]


def _with_lead(parts: DomainParts, obj: str, audience: str | None) -> str:
    """The object phrase with the domain's way of writing it ("a reply to ...") and its audience."""
    full = obj + (f" {audience}" if audience else "")
    if parts.lead in ("responding to", "replying to"):
        return f"a reply to {full}"
    if parts.lead == "commenting on":
        return f"a comment on {full}"
    return full


def _dedupe(prompts: list[str]) -> list[str]:
    seen, out = set(), []
    for p in prompts:
        key = p.lower()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _spread(groups: list[list[str]], n: int) -> list[str]:
    """Round-robin over the groups so every neighbour is represented."""
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return _dedupe(out)[:n]


def _near_subjects(subject: str, rng: random.Random) -> list[str]:
    """Subjects next to `subject`, or as near as the generator can guess (see the module docstring)."""
    known = _known_subject(subject)
    if known:
        return list(SUBJECTS[known][1])
    pm = _PLACE.search(subject)
    if pm:  # "HIV/AIDS in Rwanda" -> "HIV/AIDS in Kenya": the same subject elsewhere
        return [subject[: pm.start()] + f" in {p}" for p in PLACES if p != pm.group("place")][:5]
    words = subject.split()
    if words and words[0].lower() == "my" and len(words) > 1:  # "my parents" -> "my grandparents"
        return [r for r in RELATIONS if r != subject.lower()][:5]
    if len(words) > 1:  # "financial news" -> "sports news": keep the head noun, swap its qualifier
        quals = [q for q in QUALIFIERS if q not in subject.lower()]
        rng.shuffle(quals)
        return [f"{q} {words[-1]}" for q in quals[:5]]
    topics = [t for t in POOL_TEXT if t not in subject.lower()]
    rng.shuffle(topics)
    return topics[:5]  # nothing known nearby: other topics, closer to out-of-scope than near


def template_categories(domain: str) -> list[str]:
    """The domain and its neighbours: the template generator's stand-in for the teacher's categories."""
    parts = parse_domain(domain)
    if parts.kind == "artefact":
        return [parts.core] + ARTEFACT_NEIGHBOURS.get(parts.head, [])
    return [parts.head] + _near_subjects(parts.head, random.Random(domain))


def template_prompts(domain: str, n_in: int, n_near: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(in-scope, near-scope) prompts for `domain` built from templates; see the module docstring."""
    rng = random.Random(f"{seed}:{domain}")
    parts = parse_domain(domain)
    if parts.kind == "artefact":
        creative = parts.head in _CREATIVE
        in_scope = _artefact_prompts(_with_lead(parts, parts.obj, parts.audience), creative, n_in, rng)
        groups = []
        for other in ARTEFACT_NEIGHBOURS.get(parts.head, []):
            # A neighbour keeps the audience but not the modifiers ("Slack message DM" -> "email").
            groups.append(_artefact_prompts(_with_lead(parts, _a(other), parts.audience), other in _CREATIVE,
                                            n_near, rng))
        if parts.audience:  # the same artefact for someone else: "to my boss Jared" -> "to my sister"
            prep = parts.audience.split()[0]
            own = parts.audience.lower()
            others = [a for a in AUDIENCES if a.split()[-1] not in own]
            rng.shuffle(others)
            groups += [_artefact_prompts(_with_lead(parts, parts.obj, f"{prep} {a}"), creative, 3, rng)
                       for a in others[:4]]
        return in_scope, _spread(groups, n_near)
    in_scope = _subject_prompts(parts.head, n_in, rng)
    groups = [_subject_prompts(s, n_near, rng) for s in _near_subjects(parts.head, rng)]
    return in_scope, _spread(groups, n_near)

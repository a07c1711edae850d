"""Prompts written without a teacher: the built-in general pool, and a template generator.

Two uses in C3PO synthesis (policies.synthesis):

- `GENERAL_POOL`: everyday requests over many topics, each tagged with its topic. It tops up
  the out-of-scope set when logged traffic is thin. The topic tag lets the caller drop a whole
  topic that overlaps the principle's domain ("How long do I boil an egg?" never says
  "cooking", but its tag does).
- `template_prompts`: in-scope and near-scope prompts for a domain when no capable teacher is
  configured. A 135M model cannot write a good prompt set, so instead the domain phrase is
  parsed into an artefact ("text messages", with an audience "to my girlfriend Maddie") or a
  subject ("gardening", "HIV/AIDS in Rwanda"); in-scope prompts combine it with request
  templates and topics; near-scope prompts swap the head noun or the audience for a nearby
  one (work emails -> text messages, emails to a friend; gardening -> farming, cooking).

Limits of the template generator, worth knowing before trusting its numbers:
- it knows the neighbours of a few dozen common artefacts and subjects; for an unknown subject
  the near-scope set falls back to swapping a place ("in Rwanda" -> "in Kenya") or, failing
  that, to other pool topics, which makes "near" scope closer to "out of" scope;
- prompts are grammatical but formulaic, and less varied than a capable teacher's;
- a domain phrased unusually ("the first sentence of any reply when ...") parses badly: the
  whole phrase then becomes the subject.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# -- the general pool ---------------------------------------------------------------------------

_POOL_TEXT = {
    "cooking": [
        "How long should I boil an egg for a runny yolk?",
        "What can I make for dinner with rice, chickpeas and spinach?",
        "Why does my bread come out dense?",
        "How do I keep pasta from sticking together?",
        "Give me a simple recipe for lentil soup.",
        "What is the difference between baking soda and baking powder?",
    ],
    "chemistry": [
        "What is a covalent bond?",
        "Why does salt dissolve in water but oil does not?",
        "Explain what a pH value measures.",
        "What happens during an oxidation reaction?",
        "How do catalysts speed up chemical reactions?",
        "What is the difference between an element and a compound?",
    ],
    "physics": [
        "Why is the sky blue?",
        "Explain Newton's third law with an everyday example.",
        "What is the difference between speed and velocity?",
        "How does a refrigerator move heat out of its inside?",
        "Why do objects float in water?",
        "What is friction and why does it produce heat?",
    ],
    "history": [
        "What caused the fall of the Western Roman Empire?",
        "Who built the pyramids of Giza, and how?",
        "Why did the printing press matter so much?",
        "What was the Silk Road?",
        "Summarise the causes of the First World War.",
        "How did the Industrial Revolution change daily life?",
    ],
    "geography": [
        "What is the longest river in Africa?",
        "Why are there deserts next to oceans in some places?",
        "How are mountains formed?",
        "Which countries share a border with Switzerland?",
        "What is the difference between weather and climate?",
    ],
    "mathematics": [
        "How do I calculate the area of a circle?",
        "What is a prime number? Give a few examples.",
        "Explain what a derivative is in simple terms.",
        "How do I convert a fraction to a percentage?",
        "What is the Pythagorean theorem used for?",
        "Why can't you divide by zero?",
    ],
    "programming": [
        "What is the difference between a list and a tuple in Python?",
        "How do I reverse a string in JavaScript?",
        "What does a SQL JOIN do?",
        "Explain recursion with a short example.",
        "What is version control and why should I use git?",
        "How do I read a CSV file in Python?",
    ],
    "travel": [
        "What should I pack for a week-long hiking trip?",
        "What are good things to do in Lisbon for three days?",
        "How can I avoid jet lag on a long flight?",
        "Is it better to book flights early or late?",
        "What documents do I need to travel abroad?",
        "Suggest a road trip route along a coast.",
    ],
    "fitness": [
        "Give me tips for running my first 5k.",
        "How many times a week should I do strength training?",
        "What is a good warm-up before lifting weights?",
        "How do I improve my posture at a desk?",
        "What stretches help with lower back pain?",
        "Is it better to exercise in the morning or the evening?",
    ],
    "personal finance": [
        "How do I start a monthly budget?",
        "What is compound interest?",
        "Should I pay off debt or save first?",
        "What is an index fund?",
        "How much should I keep in an emergency fund?",
        "How does a credit score work?",
    ],
    "music": [
        "What is the difference between a major and a minor key?",
        "How do I start learning the guitar as an adult?",
        "Who were the most influential jazz musicians?",
        "What does a music producer do?",
        "How can I get better at singing in tune?",
    ],
    "movies": [
        "Recommend a few classic science fiction films.",
        "What makes a good movie plot twist?",
        "How are animated films made?",
        "What is film noir?",
        "Why do some movies get remade so often?",
    ],
    "literature": [
        "What is the main theme of Moby-Dick?",
        "Recommend some short novels for a long train ride.",
        "What is the difference between a metaphor and a simile?",
        "Who was Jane Austen?",
        "How do I write a good book review?",
    ],
    "language learning": [
        "What is the fastest way to learn basic Spanish?",
        "How do I remember new vocabulary?",
        "Is it hard for English speakers to learn Japanese?",
        "What are common mistakes when learning French?",
        "How many words do I need to hold a conversation?",
    ],
    "careers": [
        "How do I prepare for a job interview?",
        "What should I put on my resume if I have little experience?",
        "How do I ask for a raise?",
        "Is it a good idea to change careers at forty?",
        "How do I negotiate a job offer?",
        "What skills are most useful for a project manager?",
    ],
    "pets": [
        "How often should I walk my dog?",
        "Why does my cat knock things off the table?",
        "What do I need before getting a pet rabbit?",
        "How do I train a puppy to stop biting?",
        "What fish are easy to keep for beginners?",
    ],
    "cars": [
        "How often should I change the oil in my car?",
        "What does the check engine light mean?",
        "Are electric cars cheaper to run than petrol cars?",
        "How do I jump-start a car battery?",
        "What should I check when buying a used car?",
    ],
    "astronomy": [
        "Why does the Moon have phases?",
        "What is a black hole?",
        "How far away is the nearest star?",
        "Why is Pluto no longer called a planet?",
        "What causes a solar eclipse?",
    ],
    "biology": [
        "How do vaccines train the immune system?",
        "What is DNA made of?",
        "Why do we need sleep?",
        "How do bees make honey?",
        "What is the difference between bacteria and viruses?",
    ],
    "art": [
        "How do I start painting with watercolours?",
        "What is impressionism?",
        "How do I draw a face in proportion?",
        "Who was Frida Kahlo?",
        "What makes a photograph well composed?",
    ],
    "sports": [
        "Explain the offside rule in football.",
        "How is a tennis match scored?",
        "What are the rules of basketball in short?",
        "How do I improve my swimming technique?",
        "Why is the Tour de France so hard?",
    ],
    "technology": [
        "How does Wi-Fi work?",
        "What is the cloud, in plain words?",
        "How do I make my laptop battery last longer?",
        "What is the difference between RAM and storage?",
        "How do I choose a good password?",
        "What is a VPN and do I need one?",
    ],
    "health": [
        "How much water should I drink a day?",
        "What are the benefits of eating more fibre?",
        "How can I fall asleep faster?",
        "What are common signs of dehydration?",
        "Is coffee bad for you?",
    ],
    "home repair": [
        "How do I fix a dripping tap?",
        "How do I patch a small hole in drywall?",
        "What tools should every home have?",
        "How do I unclog a drain without chemicals?",
        "How do I bleed a radiator?",
    ],
    "gardening": [
        "How often should I water tomato plants?",
        "When is the best time to plant tulip bulbs?",
        "How do I start a compost heap?",
        "Why are the leaves on my basil turning yellow?",
        "How do I keep slugs away from my lettuce?",
    ],
    "philosophy": [
        "What is the trolley problem?",
        "What did Socrates mean by 'know thyself'?",
        "What is the difference between ethics and morals?",
        "What is existentialism in simple terms?",
        "Can we ever be sure of anything?",
    ],
    "economics": [
        "What causes inflation?",
        "What is supply and demand?",
        "Why do countries trade with each other?",
        "What is a recession?",
        "How do interest rates affect house prices?",
    ],
    "parenting": [
        "How do I help a toddler sleep through the night?",
        "How much screen time is okay for children?",
        "How do I talk to my teenager about stress?",
        "What are good activities for a rainy day with kids?",
        "How do I encourage my child to read more?",
    ],
    "everyday writing": [
        "Write a short thank-you note to a neighbour who watered my plants.",
        "Write a one-paragraph bio for a conference speaker page.",
        "Give me a catchy title for a blog post about saving money.",
        "Write a short product description for a reusable water bottle.",
        "Write a two-sentence invitation to a board game night.",
    ],
    "trivia": [
        "How many bones are in the human body?",
        "Why do we have leap years?",
        "What is the tallest building in the world?",
        "Where does the word 'robot' come from?",
        "Why do onions make us cry?",
    ],
}

# (topic, prompt) pairs; the order is fixed so a seeded sample is reproducible.
GENERAL_POOL: list[tuple[str, str]] = [(topic, p) for topic, prompts in _POOL_TEXT.items() for p in prompts]


def pool_prompts(exclude_topics=(), exclude=None) -> list[tuple[str, str]]:
    """The pool without the given topics and without prompts for which `exclude(prompt)` is true."""
    banned = {t.lower() for t in exclude_topics}
    return [(t, p) for t, p in GENERAL_POOL if t not in banned and not (exclude and exclude(p))]


# -- the template generator ---------------------------------------------------------------------

# Artefacts a request can ask to write, with the nearby artefacts that make near-scope prompts.
ARTEFACT_NEIGHBOURS: dict[str, list[str]] = {
    "email": ["text message", "Slack message", "letter", "work report", "LinkedIn post"],
    "text message": ["email", "letter", "Slack message", "social media post", "greeting card"],
    "message": ["email", "letter", "social media post", "greeting card"],
    "slack message": ["email", "text message", "meeting agenda", "work report"],
    "dm": ["email", "public post", "letter"],
    "letter": ["email", "text message", "speech", "greeting card"],
    "comment": ["social media post", "product review", "text message", "email"],
    "post": ["comment", "blog post", "email", "text message"],
    "tweet": ["blog post", "email", "text message"],
    "lyrics": ["poem", "short story", "limerick", "speech"],
    "song": ["poem", "short story", "limerick"],
    "poem": ["song lyrics", "short story", "limerick", "speech"],
    "haiku": ["limerick", "song lyrics", "short story"],
    "story": ["poem", "news article", "screenplay scene", "song lyrics"],
    "report": ["email", "presentation outline", "memo", "blog post"],
    "review": ["news article", "blog post", "email"],
    "essay": ["speech", "blog post", "report"],
    "speech": ["essay", "email", "toast"],
    "cover letter": ["resume summary", "email", "thank-you note"],
    "note": ["email", "text message", "letter"],
}
_CORRESPONDENCE = {"email", "text message", "message", "slack message", "dm", "letter", "comment", "post",
                   "tweet", "note", "cover letter"}
_CREATIVE = {"lyrics", "song", "poem", "haiku", "story", "limerick"}

PURPOSES = [
    "about plans for the weekend", "thanking them for their help", "apologising for a late reply",
    "asking for a small favour", "sharing some good news", "about a change of schedule",
    "asking how their week went", "about a deadline next Friday", "congratulating them on a new job",
    "about a problem with the last delivery", "inviting them to dinner", "saying I will be late",
    "checking in after a long time", "asking for feedback on a draft", "about a birthday surprise",
    "about a missed phone call", "following up on yesterday's meeting", "about a trip next month",
    "asking to borrow a book", "cancelling our plans politely",
]
THEMES = [
    "summer at the seaside", "leaving home", "a rainy city night", "an old friendship", "the first snow",
    "a long road trip", "learning to let go", "a small village festival", "the morning commute",
    "a lost dog finding its way home", "the last day of school", "autumn leaves", "a lighthouse keeper",
    "a kitchen full of friends", "starting over", "the stars over the desert",
]
AUDIENCES = ["my best friend", "my landlord", "a coworker", "my sister", "a customer", "my neighbour",
             "my boss", "my parents", "my teacher", "my team", "an old classmate", "my doctor"]
PLACES = ["Kenya", "Brazil", "India", "France", "Canada", "Japan", "Mexico", "Egypt"]

# Subjects the generator knows: a few concrete topics each, and neighbouring subjects.
SUBJECTS: dict[str, tuple[list[str], list[str]]] = {
    "gardening": (["tomato plants", "roses", "a compost heap", "pruning fruit trees", "raised beds",
                   "growing herbs on a balcony", "lawn care", "planting bulbs"],
                  ["farming", "cooking", "botany", "landscape painting", "houseplant shopping"]),
    "cooking": (["a weeknight pasta", "roasting vegetables", "making soup stock", "seasoning a cast-iron pan",
                 "cooking rice", "a vegetarian curry", "knife skills", "braising meat"],
                ["baking", "nutrition", "gardening", "restaurant reviews", "grocery budgeting"]),
    "baking": (["sourdough bread", "chocolate chip cookies", "a sponge cake", "pie crust", "bread proofing"],
               ["cooking", "nutrition", "chemistry", "cafe management"]),
    "chemistry": (["covalent bonds", "acids and bases", "reaction rates", "the periodic table", "oxidation"],
                  ["physics", "biology", "cooking", "geology"]),
    "physics": (["gravity", "electric circuits", "light and colour", "energy conservation", "magnetism"],
                ["chemistry", "astronomy", "engineering", "mathematics"]),
    "quantum physics": (["superposition", "entanglement", "the uncertainty principle", "quantum tunnelling"],
                        ["classical mechanics", "chemistry", "astronomy", "computer science"]),
    "biology": (["cell division", "photosynthesis", "the immune system", "evolution", "DNA"],
                ["chemistry", "medicine", "gardening", "ecology"]),
    "history": (["the Roman Empire", "the French Revolution", "the Cold War", "ancient Egypt", "the Renaissance"],
                ["geography", "politics", "archaeology", "literature"]),
    "finance": (["index funds", "stock valuation", "bond yields", "interest rates", "company earnings"],
                ["economics", "personal budgeting", "accounting", "real estate"]),
    "python": (["reverse a list", "read a CSV file", "sort a dictionary by value", "merge two pandas dataframes",
                "write a class with a constructor", "catch a missing-key error", "format a string with variables",
                "remove duplicates from a list", "count words in a text file", "call a web API"],
               ["JavaScript coding", "SQL queries", "computer hardware", "software project management"]),
    "music": (["jazz", "learning piano", "music theory", "famous bands", "writing a melody"],
              ["film", "poetry", "dance", "painting"]),
    "cars": (["engine maintenance", "electric cars", "buying a used car", "tyre pressure", "car insurance"],
             ["motorbikes", "public transport", "cycling", "aeroplanes"]),
    "fashion": (["choosing a suit", "summer outfits", "matching colours", "shoes for work", "a wedding outfit"],
                ["interior design", "hairdressing", "shopping on a budget", "art history"]),
    "dinosaurs": (["Tyrannosaurus rex", "fossils", "the extinction event", "flying reptiles", "raptors"],
                  ["modern birds", "geology", "mammoths", "evolution"]),
    "calculus": (["derivatives", "integrals", "limits", "the chain rule", "optimisation problems"],
                 ["algebra", "statistics", "physics", "geometry"]),
    "machine learning": (["gradient descent", "overfitting", "neural networks", "decision trees", "embeddings"],
                         ["statistics", "databases", "software engineering", "neuroscience"]),
    "artificial intelligence": (["large language models", "computer vision", "reinforcement learning",
                                 "AI safety", "chatbots"],
                                ["robotics", "neuroscience", "philosophy of mind", "statistics"]),
    "travel": (["packing light", "visiting Rome", "train travel in Europe", "travel insurance", "hostels"],
               ["moving abroad", "camping", "geography", "restaurant reviews"]),
    "fitness": (["strength training", "running a 10k", "stretching", "rest days", "home workouts"],
                ["nutrition", "physiotherapy", "team sports", "meditation"]),
}

SUBJECT_TEMPLATES = [
    "Can you explain {topic} to me?", "What should a beginner know about {topic}?",
    "What are common mistakes with {topic}?", "Give me three tips for {topic}.",
    "How do I get started with {topic}?", "What is the most important thing to know about {topic}?",
    "I'm struggling with {topic}. Any advice?", "What are the pros and cons of {topic}?",
    "Explain {topic} in a few sentences.", "What are some surprising facts about {topic}?",
]
# Phrasings that read well around any noun phrase ("HIV/AIDS in Rwanda", "good finance books").
GENERIC_SUBJECT_TEMPLATES = [
    "Tell me about {subject}.", "What should I know about {subject}?", "Give me a short overview of {subject}.",
    "What do people often get wrong about {subject}?", "What are three key points about {subject}?",
    "Explain {subject} in a few paragraphs.", "What should I read to learn about {subject}?",
    "Help me think through a question about {subject}.", "What are some interesting facts about {subject}?",
    "I'd like to talk about {subject}. Where should we start?",
]
FRAMINGS = ["", "Quick question: ", "I'm preparing a short talk. ", "My friend asked me this. ",
            "In simple terms, please. ", "I'm curious. "]
# Subjects whose requests are tasks rather than questions get their own templates.
TASK_TEMPLATES = {
    "python": ["How do I {topic} in Python?", "Show me how to {topic} in Python.",
               "What's the Python syntax to {topic}?", "Quick Python question: how can I {topic}?",
               "In Python, what is the simplest way to {topic}?"],
}
# Qualifiers that turn an unknown "X books" / "X news" into a neighbour ("sports news").
QUALIFIERS = ["sports", "music", "science", "business", "art", "technology", "cooking", "travel", "health",
              "fashion"]
WRITE_TEMPLATES = ["Write {obj} {purpose}.", "Draft {obj} {purpose}.", "Can you write {obj} {purpose}?",
                   "Help me write {obj} {purpose}.", "I need {obj} {purpose}. Keep it short."]
CREATIVE_TEMPLATES = ["Write {obj} about {purpose}.", "Compose {obj} about {purpose}.",
                      "Can you write {obj} about {purpose}?", "I'd like {obj} about {purpose}."]
RELATIONS = ["my grandparents", "my boss", "my neighbours", "my best friend", "my teachers", "my cousins"]
# Words after a subject that do not change it: "Python coding" is Python, "calculus questions" calculus.
_GENERIC_NOUNS = {"coding", "programming", "question", "questions", "concept", "concepts", "topic", "topics",
                  "theory", "basics", "advice", "tips"}
_PLURAL_ONLY = {"lyrics"}
_DROP_SUFFIX = {"composition", "writing", "drafting"}

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
    topics = [t for t in _POOL_TEXT if t not in subject.lower()]
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

"""Phrase cues for natural feedback: what a user's next turn says about our answer.

Each cue is a named regular expression with a kind:

- `negative`: the answer was wrong or unhelpful ("that's wrong", "doesn't work", "too long").
- `correction`: the turn gives the fix ("it should be X", "X, not Y", "use X instead"). Some
  are `strong` (a correction on their own); the weak ones ("it's Canberra", "I thought it was
  1989", "Make it shorter") count only next to a negative or doubt cue, because on their own
  they read as ordinary statements or new requests.
- `doubt`: questions the answer ("are you sure?", "really?", "isn't that X?").
- `clarify`: asks what the answer meant ("what do you mean by", "can you explain").
- `positive`: thanks, praise, confirmation.
- `repeat`: announces a reformulation ("let me rephrase", "my question was").
- `principle`: a standing rule ("from now on", "whenever I ask...", "always/never ...").

Matching runs on a copy of the turn with curly apostrophes made straight (same length, so
offsets still point into the original text) and is case-insensitive except where a capital or
a digit is the point (a proper noun or a number is what makes "it's Canberra" a correction).
English only. The decision between cues is in policies.natural.rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.text import straight_quotes

KINDS = ("negative", "correction", "doubt", "clarify", "positive", "repeat", "principle")


@dataclass(frozen=True)
class Cue:
    name: str
    kind: str
    pattern: re.Pattern
    strong: bool = True  # for corrections: counts without a negative/doubt cue next to it
    statement_only: bool = False  # ignored in a sentence that ends with "?"
    negatable: bool = False  # ignored right after a negation ("not helpful", "never said I wanted")


@dataclass(frozen=True)
class Hit:
    cue: Cue
    start: int
    end: int


_I = re.I


def _cue(kind: str, name: str, regex: str, *, strong: bool = True, statement_only: bool = False,
         negatable: bool | None = None, flags=_I) -> Cue:
    # Praise is negatable by default: "not helpful", "not a good answer".
    return Cue(name, kind, re.compile(regex, flags), strong, statement_only,
               kind == "positive" if negatable is None else negatable)


# Shared pieces. "that's", "thats", "that is", "it was"... all count as "that is".
_SUBJ = r"(?:that|this|it|which|your (?:answer|code|example|formula|regex|link|query|list|recipe)|the (?:answer|code|formula|regex|link|query|result|list|recipe|example|number|math|date|command))"
_BE = r"(?:'?s|is|was|were|are|'re|seems|looks|sounds)"
_NT = r"(?:n'?t|not)"
_ADV = r"(?:(?:completely|totally|definitely|simply|just|clearly|still|all|so|very|quite|entirely|absolutely|plain|actually)\s+)*"

NEGATIVE = [
    _cue("negative", "wrong", rf"\b{_SUBJ}\s*{_BE}\s+{_ADV}(?:wrong|incorrect|inaccurate|false|untrue|mistaken|a mistake|an error|nonsense|made up|outdated|not (?:right|correct|true|accurate|it|quite right|quite it|the case|what I))\b"),
    _cue("negative", "not_a", rf"\b{_SUBJ}\s*{_BE}\s+not\s+(?:a|an|one|even|in|what|how)\b(?!\s+(?:a\s+)?(?:problem|issue|big deal|worry)\b)"),
    _cue("negative", "not_what_i", r"\bnot what I (?:asked|wanted|meant|needed|was (?:asking|looking) for|requested|said|had in mind)\b"),
    _cue("negative", "you_wrong", r"\byou(?:'re| are| were)\s+(?:\w+\s+)?(?:wrong|mistaken|incorrect|confused|hallucinating|making (?:that|this|things|it) up)\b"),
    _cue("negative", "got_wrong", r"\byou (?:got|have|had) (?:it|that|this|the \w+|my \w+) (?:all )?(?:wrong|backwards|mixed up|confused)\b"),
    _cue("negative", "you_failed", r"\byou (?:\w+ )?(?:didn'?t|did not|haven'?t|have not|never|failed to|still haven'?t)\s+(?:even\s+|actually\s+|really\s+)?(?:answer|address|read|follow|listen|do what|understand|get|fix|respond to)\b"),
    _cue("negative", "you_ignored", r"\byou (?:\w+ )?(?:ignored|misunderstood|misread|misinterpreted|dodged|avoided)\b"),
    _cue("negative", "doesnt_work", rf"\b(?:it|that|this|which|(?:the|that|this|your) [\w-]+)\s+(?:still\s+)?(?:does{_NT}|did{_NT}|won'?t|will not|is{_NT}|was{_NT}|can'?t|cannot)\s+(?:even\s+|really\s+|actually\s+)?(?:work|working|compile|run|help|make (?:any )?sense|answer|match|exist|add up|seem right|look right|load|fix|solve|true|correct|right)\b"),
    _cue("negative", "not_working", r"\b(?:still|isn'?t|is not|not) working\b|\bstill (?:broken|wrong|failing|the same|crashing)\b"),
    _cue("negative", "nonsense", r"\b(?:makes no sense|does{0} make (?:any )?sense|nonsense|gibberish|useless|unhelpful|pointless|irrelevant|off[- ]topic|hallucinat\w*)\b".format(_NT)),
    _cue("negative", "not_helpful", r"\bnot (?:very |really |that |at all |particularly |too |so )?(?:helpful|useful|relevant|accurate|correct|what I)\b"),
    _cue("negative", "too_much", r"\b(?:way |far |much |a bit |a little |slightly |rather |just )?too (?:long|short|verbose|wordy|complicated|complex|technical|vague|generic|formal|informal|casual|simple|basic|advanced|brief|repetitive|robotic|stiff|dense|much|little)\b(?!\s+(?:to|for me to)\b)"),
    _cue("negative", "dont_think", rf"\bI do{_NT} think (?:so|that'?s (?:right|correct|true|accurate)|that is (?:right|correct|true)|it'?s (?:right|correct))\b|\b(?:that|this|it) can'?t be (?:right|true|correct)\b|\bthat'?s not how\b|\bthere'?s no such\b|\bthere is no such\b"),
    _cue("negative", "error", r"\bI (?:get|got|am getting|'m getting|keep getting|still get) (?:an?|the|this|that|another) (?:\w+ )?(?:error|exception|warning|crash)\b|\b(?:throws|raises|gives me) (?:an?|the|another) (?:\w+ )?(?:error|exception)\b"),
    _cue("negative", "bad", r"\b(?:this|that|it)(?:'s| is| was) (?:\w+ )?(?:bad|terrible|awful|horrible|garbage|rubbish|worse|useless|a mess)\b"),
    _cue("negative", "never_said", rf"\bI (?:never|did{_NT}) (?:say|said|ask|asked|want|wanted|mention|mentioned|request|requested)\b"),
    _cue("negative", "answer_question", r"\b(?:just |please |can you |could you )?answer (?:my|the) (?:question|query)\b"),
    _cue("negative", "missing", r"\b(?:is|are) (?:still )?missing\b|\bsomething(?:'s| is) (?:wrong|not right|missing)\b"),
    _cue("negative", "bare_no", r"^\W*(?:no+|nope|nah|wrong|incorrect|false|not quite|not really|negative|uh+,? no)\W*$"),
    # Second round, from the first held-out split's misses (generalised, not the sentences).
    _cue("negative", "than_asked", r"\b(?:longer|shorter|more|less|fewer|bigger|smaller|harder|simpler|wordier|later|earlier|older) than (?:I (?:asked|wanted|needed|said|specified|requested)|what I (?:asked|wanted|needed))\b"),
    _cue("negative", "bare_doesnt", rf"(?:^|[.!;]\s*)(?:still\s+)?(?:does{_NT}|did{_NT}|won'?t|can'?t)\s+(?:even\s+)?(?:work|run|compile|build|load|install|start|open|help|parse)\b", statement_only=True),
    _cue("negative", "tool_error", r"\b(?:crash(?:es|ed)?|fail(?:s|ed)?|dies|died|blows up|blew up|errors? out|bails out)\s+(?:\w+\s+){0,3}?(?:with|on)\b|\b(?:says|prints|shows|gives me|returns|throws|raises)\s+['\"]?(?:command not found|syntax ?error|\w+(?:Error|Exception)\b)|\bcommand not found\b|\bsegmentation fault\b|\bsegfault\b|\btraceback\b",
         statement_only=True),
    _cue("negative", "lacking", rf"\b{_SUBJ}\s*{_BE}\s+(?:\w+\s+){{0,2}}(?:generic|vague|bland|shallow|superficial|lazy|boring|unclear|hard to (?:read|follow|understand|use)|confusing|incomplete|half[- ]done|the same (?:thing|answer|text|sentence|code|as before))\b", statement_only=True),
    _cue("negative", "hard_to", r"(?:^|[.!;,]\s*)(?:really |very |so |pretty )?(?:hard|difficult|impossible|painful) to (?:read|follow|understand|use|parse|skim)\b"),
    _cue("negative", "meh", r"^\W*(?:meh|ugh|sigh|hmph|yikes|oof)\b"),
    _cue("negative", "gave_same", r"\byou (?:just |only |simply )?(?:gave|sent|returned|repeated|copied|pasted|wrote)\s+(?:me\s+)?(?:back\s+)?(?:the same|my own|exactly what I|what I)\b|\b(?:that'?s|it'?s|this is) (?:just )?(?:the same|word for word|identical)\b"),
    _cue("negative", "nothing_to_do", r"\b(?:has|had) nothing to do with\b|\btells me nothing\b|\b(?:doesn'?t|does not|didn'?t|did not) (?:tell|show|give) me (?:anything|what I)\b"),
]

# A turn that opens with "no" (or "wrong") is a verdict on the answer, unless it is a polite
# formula ("no problem") or answers a question the assistant asked (checked by the caller).
LEAD_NO = _cue("negative", "lead_no",
               r"^\W*(?:no+|nope|nah|wrong|incorrect|not quite|not exactly|not really|uh+,? no)\b(?!\s+(?:problem|problems|worries|worry|thanks|thank you|need|rush|doubt|way|idea|matter|clue|longer|big deal)\b)\s*[,.!;:—–-]")

CORRECTION = [
    _cue("correction", "should_be", r"\b(?:it|that|this|which|they|he|she|the (?:answer|code|function|result|date|name|value|output|title|subject|total|sum))\s+(?:should|must|needs? to|has to|have to|ought to)\s+(?:be|say|read|use|return|have|include|start|end|go|take|contain)\b|\bshould(?:'ve| have) been\b", statement_only=True),
    _cue("correction", "correct_is", r"\bthe (?:correct|right|actual|real|true|proper) (?:\w+ )?(?:answer|one|name|date|year|value|number|result|spelling|word|term|figure|amount|version|way|command|syntax|formula|title|address|price|time)\s+(?:is|was|would be|should be)\b|\bthe answer (?:is|was|should be)\b"),
    _cue("correction", "x_not_y", r"\b\w[^.?!,;]{0,60},\s*not\s+(?:a |an |the |in |on |at |to |by )?['\"‘“]?\w[^.?!,;]{0,40}", statement_only=True),
    _cue("correction", "not_x_but_y", r"\bnot\s+[^.?!,;]{1,40},?\s+but\s+(?:rather\s+)?\w+", statement_only=True),
    _cue("correction", "instead", r"\binstead\b|\brather than\b", statement_only=True),
    _cue("correction", "actually", r"\b(?:actually|in fact|in reality)\b", statement_only=True),
    _cue("correction", "correction_label", r"\bcorrection\s*:|\bto correct you\b|\bjust to correct\b"),
    _cue("correction", "i_asked_for", r"(?<!what )(?<!than )\bI (?:asked|wanted|requested|needed|said|specified|told you)\b(?!\s+(?:you\s+)?(?:a question|if|whether)\b)", statement_only=True, negatable=True),
    _cue("correction", "thought_it_was", r"\bI (?:always )?(?:thought|believed|was told|learned|learnt) (?:it|that|the \w+|they|he|she|this) (?:was|is|were|are|'s|would be|came|happened)\b"),
    _cue("correction", "you_forgot", r"\byou (?:forgot|missed|left out|skipped|omitted|dropped)\s+(?!the point\b)(?:to\s+\w+|(?:the|a|an|my|about|some|all)\s+\w+)"),
    _cue("correction", "its_called", r"\b(?:it'?s|it is|they'?re|they are|that'?s|he'?s|she'?s)\s+(?:actually\s+)?(?:called|spelled|spelt|pronounced|named|written)\b"),
    _cue("correction", "as_x_please", r"^\W*(?:in|as|with|using|without|into)\s+[\w' -]{2,30}?,?\s+please\b|^\W*(?:in|as|with|using|without|into)\s+[\w' -]{2,30}?,?\s+not\s+\w+", statement_only=True),
    _cue("correction", "you_need", r"\byou (?:need|have|ought) to (?:use|pass|call|add|write|put|run|set|import|install|type|say)\b|\byou (?:pass|use|call|write|need) (?:\w+\s){0,2}(?:instead|there)\b", statement_only=True),
    # Weak: corrective only next to a negative or doubt cue.
    _cue("correction", "is_value", r"\b(?i:it|that|this|he|she|they|there|which)(?i:'s|'re| is| was| are| were)(?i: actually| really| in fact)?\s+(?:(?i:on|in|at|under|from|by|located)\s+\S|(?i:only|just|over|about|around|exactly|roughly|nearly)\s+[0-9$€£]|[A-Z0-9'\"‘“$€£])",
         strong=False, statement_only=True, flags=0),
    _cue("correction", "subject_is_value", r"(?:^|[.,;:!?—–-]\s*)(?:[\w'-]+\s){1,5}(?:is|are|was|were)\s+(?:called\s+|spelled\s+|actually\s+|really\s+)?(?:['\"‘“]|\d|[A-Z])",
         strong=False, statement_only=True, flags=0),
    _cue("correction", "belief", r"\bI(?:'ve| have)? (?:heard|read|believe|remember|recall|seem to remember)\b(?! (?:so|you)\b)|\bI'?m (?:pretty |quite |fairly |almost )?(?:sure|certain) (?:it|that|the|he|she|they)\b",
         strong=False, statement_only=True),
    _cue("correction", "hedged_value", r"\b(?:pretty|quite|fairly|almost|I'?m) (?:sure|certain|positive) (?:it'?s|it is|it was|that'?s|they'?re|he'?s|she'?s)\s+(?:closer to |more like |nearer |about |around |actually |really )?(?:[0-9$€£]|[A-Z])|\b(?:closer to|more like|nearer to?)\s+[~$€£]?\d",
         flags=0),
    _cue("correction", "imperative_fix", r"(?:^|[.!;,:]\s*|\b(?:so|and|just|please|instead|now)\s+)(?:please\s+|just\s+|can you\s+|could you\s+)?(?:make|use|write|keep|change|replace|add|remove|put|include|drop|cut|shorten|convert|switch|format|rewrite|turn|call|spell|start|begin|end|return|give me|list|limit|translate|stick to|focus on)\b",
         strong=False),
]

DOUBT = [
    _cue("doubt", "really_value", r"\b(?:is|was|are|were) (?:it|that|this|they|he|she|there) really\s+(?:(?-i:[0-9$€£A-Z])|true|right|correct|accurate|the case|that (?:many|much|old|young|big|small|long|far|high|low|recent)|so (?:many|much|old|big|long|far)|only|just|about|around|over|under|more|less)[^.?!]{0,40}\?|\b(?:did|does|do) (?:it|that|this|they|he|she|you) really\b[^.?!]{0,30}\?|\b(?:hm+|huh|wait),?\s+(?:is|was|are|were) (?:it|that|this)\b[^.?!]*\?"),
    _cue("doubt", "are_you_sure", r"\b(?:are|r) (?:you|u) (?:really |completely |totally |absolutely )?(?:sure|certain|positive|confident)\b|\byou sure\b|\bhow (?:sure|certain|confident) are you\b"),
    _cue("doubt", "really", r"(?:^|[.!?]\s*)(?:really|seriously|truly|for real|is it|are they|does it)\s*\?+"),
    _cue("doubt", "is_that_right", r"\b(?:is|was|are) (?:that|this|it|these|those) (?:really |actually |definitely |even )?(?:right|correct|true|accurate|so|the case|up to date|current)\s*\?"),
    _cue("doubt", "double_check", r"\b(?:double[- ]?check|re-?check|check (?:that|this|it|again|your \w+)|verify (?:that|this|it)|fact[- ]check)\b"),
    _cue("doubt", "source", r"\bhow do you know\b|\bwhat(?:'s| is) your source\b|\bsources?\s*\?|\bwhere did you (?:get|find|read|see) (?:that|this)\b|\bcitation\b"),
    _cue("doubt", "negative_question", rf"(?:^|[.!?,]\s*|\b(?:hmm|but|wait|um|uh),?\s+)(?:is|was|are|were|should|does|do|did|would|could|can){_NT} (?:it|that|this|they|he|she|there|you|the \w+)\b[^.?!]*\?"),
    _cue("doubt", "seems_off", r"\b(?:that|this|it|these|those)(?:'s| is| are)? (?:seems?|sounds?|looks?) (?:a bit |very |way |really |rather |quite |kind of |a little )?(?:wrong|off|odd|weird|strange|fishy|suspicious|unlikely|questionable|implausible|incorrect)\b"),
]

CLARIFY = [
    _cue("clarify", "example_please", r"\b(?:an?|some|short|quick|simple|small|concrete|real|worked|code|another)\s+(?:\w+\s)?examples?\b[^.!]*\?|\bany chance (?:of|you could)\b[^.!]*\?"),
    _cue("clarify", "why_is_that", r"(?:^|[.!?]\s*)why (?:is|was|would|does|do|should|did) (?:that|this|it|these|those|you)\b[^.!]{0,40}\?"),
    _cue("clarify", "what_mean", r"\bwhat (?:do|did|does) (?:you|that|this|it|[\w'\"‘’-]+(?: [\w-]+){0,3}) (?:mean|stand for|refer to|refers to)\b|\bwhat(?:'s| is) meant by\b|\bwhat you mean\b|\bmeaning of\b"),
    _cue("clarify", "explain", r"\b(?:can|could|would|will) you (?:please |maybe )?(?:explain|clarify|elaborate|expand|unpack|break (?:it|that|this|\w+) down|go into (?:more )?detail|be more specific|say more|give (?:me )?(?:an |a concrete |a real |some |more |another )?examples?|show (?:me )?(?:an |a |some )?(?:examples?|sample)|simplify (?:that|this|it)|rephrase (?:that|this|it)|put (?:it|that|this) (?:another way|differently|more simply)|walk me through|tell me more)\b"),
    _cue("clarify", "explain_imperative", r"(?:^|[.!?]\s+)(?:please )?(?:explain|clarify|elaborate)\b|\bin (?:simpler|plain|plainer|layman'?s|easier|simple) (?:terms|words|english|language)\b|\b(?:an|for|one|some|concrete) examples?\s*\?"),
    _cue("clarify", "dont_understand", rf"\bI (?:still )?(?:do{_NT}|did{_NT}) (?:really |quite |fully )?(?:understand|get (?:it|that|this|what|how|why)|follow|see (?:how|why|what))\b|\bI'?m (?:a bit |a little |still |totally |so |kind of |very )?(?:confused|lost)\b|\bnot sure I (?:understand|follow|get)\b|\bI'?m not (?:sure|clear) (?:what|how|why|which) (?:you|that|this|it)\b|\bconfusing\b"),
    _cue("clarify", "which_is_that", r"\bwhich (?:one|\w+(?: of \w+)?) (?:is|does|did|was|do you mean) (?:that|this|it|you)\b|\bwhich (?:one|part|step|option|version)\s*\?|\bwhat (?:part|step|bit) (?:do you mean|is that)\b|\bhow so\s*\?|\bin what (?:sense|way)\s*\?|(?:^|[.!?]\s*)why\s*\?+$|\blike what\s*\?|\bsuch as\s*\?"),
]

POSITIVE = [
    _cue("positive", "thanks", r"\b(?:thanks|thank you|thank u|thankyou|thx|tnx|many thanks|cheers|much obliged)\b"),
    _cue("positive", "appreciate", r"\bmuch appreciated\b|\b(?:really |truly |so )?appreciate (?:it|that|this|the help|your help|you)\b"),
    _cue("positive", "praise_opening", r"(?:^|[.!?]\s+)(?:(?:oh|wow|ok|okay|yes|yeah|yep|ah|aha|oh wow|that's|that is|this is)[,!.]?\s+)*(?:perfect|great|awesome|excellent|brilliant|wonderful|fantastic|amazing|superb|lovely|nice|sweet|neat|cool|splendid|terrific|outstanding|fabulous|beautiful|incredible|impressive)\b(?!\s+(?:question|idea)\s*\?)(?!\s+(?-i:[A-Z]))"),
    _cue("positive", "that_is_good", r"\b(?:that|this|it|which)(?:'s| is| was| were| looks| sounds| seems)\s+(?:(?:really|very|so|super|just|exactly|absolutely|pretty|quite|extremely|incredibly)\s+)*(?:perfect|great|awesome|excellent|brilliant|wonderful|fantastic|amazing|helpful|useful|clear|right|correct|spot on|it|good|fine|better|ideal|what I (?:needed|wanted|was looking for|asked for|meant))\b(?!\s*\?)"),
    _cue("positive", "it_works", r"\b(?:that|this|it|which|your \w+|the \w+)\s+(?:now\s+)?(?:works|worked|helped|helps|did the trick|does the trick|fixed it|solved it|solved my|fixed my|compiles|compiled|runs|ran)\b(?!\s*\?)|\bworks (?:now|perfectly|great|fine|like a charm|beautifully)\b"),
    _cue("positive", "praise_phrase", r"\b(?:spot on|nailed it|bang on|just what I needed|exactly what I (?:needed|wanted|was looking for|meant)|love (?:it|this|that|the \w+|your \w+|how (?:you|it|this))|lifesaver|life saver|you rock|you'?re the best|you'?re a star|you'?re a genius|you'?re amazing|well done|bravo|kudos|good stuff)\b"),
    _cue("positive", "good_noun", r"\b(?:good|great|nice|excellent|brilliant|perfect|awesome|fantastic|helpful|clear|amazing|lovely|solid|wonderful|superb) (?:job|work|answer|explanation|response|reply|catch|point|call|summary|suggestion|suggestions|stuff|advice|tip|tips|example|list|recipe|idea|ideas|way to (?:put|say|explain) (?:it|that)|analogy|metaphor|breakdown|overview)\b(?!\s*\?)"),
    _cue("positive", "makes_sense", r"\b(?:that |it |this |now it |now that )?makes (?:total |perfect |complete |a lot of |so much )?sense(?: now)?\b|(?:^|[,.!]\s*|\b(?:ok|okay|ah|oh|yes|right|great),?\s+)(?:got it|understood|crystal clear|much clearer|clear now|I see now|now I (?:get|understand) it)\b"),
    _cue("positive", "confirm", r"^\W*(?:(?:yes|yep|yeah|yup|right|correct|indeed|absolutely)[\s,!.]+)?(?:exactly|precisely|that'?s it|that'?s the one|bingo)\b|^\W*(?:right|correct|exactly|precisely|perfect|yes|yep)[\s,!.]+(?:thanks|thank you|thx|cheers)\b|^\W*(?:exactly|precisely|bingo)\W*$"),
    _cue("positive", "helpful", r"\b(?:very |really |super |so |most |extremely |incredibly )?helpful\b|\bnot bad\b"),
]

REPEAT = [
    _cue("repeat", "let_me_rephrase", r"\b(?:let me|I'?ll|I will|I'?d like to|I want to|to|I'?m going to) (?:rephrase|reword|re-?ask|ask (?:(?:it|this|that|you) )?(?:again|once more|differently|another way)|try (?:again|once more|that again|asking (?:again|differently))|put (?:it|this|that) (?:another way|differently|more simply|this way|in other words)|be (?:more )?clear(?:er)?|clarify my (?:question|request))\b"),
    _cue("repeat", "in_other_words", r"\bin other words\b|\bto put it (?:another way|differently|simply)\b|\bonce again\b|\bone more time\b|\bI(?:'ll| will)? repeat\b"),
    _cue("repeat", "again_label", r"^\W*(?:again|once more|repeat(?:ing)?|I repeat|asking again|same question)\s*[:,–—-]"),
    _cue("repeat", "my_question_was", r"\bmy (?:original |actual |real )?(?:question|request|query) (?:was|is)\b|\bwhat I(?:'m| am| was) (?:really |actually |specifically )?(?:asking|trying to ask|asking for|after|looking for|trying to find out)(?:\s+is\b|\s*[:,])|\bI(?:'m| am| was) (?:asking|trying to ask) (?:about|for|how|what|whether|if|you)\b"),
    _cue("repeat", "i_meant_question", r"\bI (?:meant|mean)\b[^.!?]*\?"),
    _cue("repeat", "was_unclear", r"\b(?:sorry,? )?(?:if )?I (?:was|wasn'?t|was not|might not have been|may not have been) (?:being )?(?:unclear|clear|vague|specific enough)\b|\bI should (?:have|'ve) been (?:clearer|more specific)\b|\bto be (?:more )?(?:clear|specific)\s*[:,]"),
]

PRINCIPLE = [
    _cue("principle", "from_now_on", r"\b(?:from now on|from here on(?: out)?|going forward|moving forward|henceforth|in (?:the )?future|for (?:the )?future|next time|from today on|for future reference|in all (?:future|your|of your) \w+|(?:for|in) (?:all )?future \w+|(?:for|in) all (?:the )?(?:future )?(?:answers|responses|replies|chats|conversations))\b"),
    _cue("principle", "whenever", r"\b(?:whenever|every time|each time|any ?time) (?:I|you|we|someone|anyone)\b"),
    _cue("principle", "conditional_rule", r"(?:^|[.!;]\s+)(?:when|if) (?:I|you|we)(?:'m| am)? (?:ask|write|send|draft|answer|reply|respond|give|talk|mention|request|need|want|chat|am|'m|use|speak)\b[^,.?!]{0,80},\s*(?:please\s+)?(?:always|never|don'?t|do not|use|keep|avoid|include|start|begin|end|write|make|give|reply|answer|respond|stop|skip|add|remember|sign|put|format|be|stick|assume|switch)\b"),
    _cue("principle", "domain_rule", r"(?:^|[.!;]\s+)(?:in|for|with|on) (?:all |any |every |each )?(?:my|your|our|the) [\w' -]{2,40},\s*(?:please\s+)?(?:always|never|don'?t|do not|use|keep|avoid|include|start|begin|end|sign|write|make|give|add|skip|put|format|be|stick)\b"),
    _cue("principle", "always_never", r"(?:^|[.!;,:]\s*|\b(?:please|and|but|so|also|you should|you must|make sure to|remember to|I want you to|I need you to|can you|could you)\s+)(?:always|never)\s+(?!mind\b|again\b)\w+", statement_only=True),
    _cue("principle", "stop_doing", r"\b(?:stop|quit|cut out|enough with)\s+(?:the\s+)?\w+ing\b", statement_only=True),
    _cue("principle", "no_more", r"\bno more \w+|\b(?:don'?t|do not|never) (?:\w+ ){1,6}(?:anymore|any more|ever again)\b", statement_only=True),
    _cue("principle", "no_x_in_my", r"(?:^|[.!;,:]\s*)(?:please\s+)?no \w+(?: \w+)? (?:in|for|when|on) (?:my|any|all|your)\b"),
    _cue("principle", "prefer", r"\bI (?:always |generally |usually |really |much )?(?:prefer|like|want|need|expect)\b[^.?!]{0,60}\b(?:answers|responses|replies|emails|code|explanations|summaries|messages|output|units|format|style|tone)\b", statement_only=True),
    _cue("principle", "remember_that", r"\b(?:remember|keep in mind|bear in mind|note|don'?t forget|never forget) (?:that )?I(?:'m| am| have|'ve| don'?t| do not| prefer| use| work| live)\b"),
    _cue("principle", "by_default", r"\b(?:by default|as a rule|as a general rule|in general,? (?:please|always|never|don'?t|I (?:\w+ )?(?:want|prefer|like|need)))\b"),
    _cue("principle", "every_x_you", r"\b(?:for|in|on|with) (?:every|each|all(?: the)?|any) (?:\w+ ){0,3}(?:you (?:write|draft|send|make|create|give me|do)|I (?:ask|send|write|give you))\b"),
    _cue("principle", "all_my", r"\b(?:for|in|with|on) (?:all|any|every one of|each of) (?:my|your|our) \w+", statement_only=True),
    _cue("principle", "dont_when", r"(?:^|[.!;,:]\s*)(?:please\s+)?(?:don'?t|do not)\s+[^.?!]{2,60}\b(?:when(?:ever)?|if) (?:you|I)\b|(?:^|[.!;,:]\s*)(?:please\s+)?(?:don'?t|do not)\s+[^.?!]{2,60}\b(?:in|for|to) my \w+", statement_only=True),
    _cue("principle", "call_me", r"\b(?:call|address) me (?:as )?['\"‘“]?[A-Z]\w+"),
]

ALL_CUES: tuple[Cue, ...] = tuple(NEGATIVE + [LEAD_NO] + CORRECTION + DOUBT + CLARIFY + POSITIVE + REPEAT + PRINCIPLE)

_NEGATION_BEFORE = re.compile(r"(?:\bnot|n't|\bnever|\bno|\bhardly|\bbarely|\bnothing)\s+(?:\w+\s+){0,2}$", re.I)
_SENTENCE = re.compile(r".+?(?:[.!?]+(?=\s+[A-Z0-9'\"‘“(]|\s*$)|\n|$)", re.S)
_CONTRAST = re.compile(r"(?:,|\.|;|\s)\s*(?:but|however|though|although|except|only)\b", re.I)
# Stands for the clause after "but" in "Thanks, but ..." (found by `contrast_after`, not matched).
PRAISE_THEN_BUT = Cue("praise_then_but", "negative", _CONTRAST)


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence; a split needs a capital, digit or quote after the stop, so
    "E. coli" and "9.11" stay whole."""
    out = []
    for m in _SENTENCE.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def find_hits(text: str, cues: tuple[Cue, ...] = ALL_CUES) -> list[Hit]:
    """Every cue match in `text`, with offsets into `text`. Cues are matched per sentence, so
    `^` means the start of a sentence for the sentence-level cues; a positive cue right after a
    negation ("not helpful", "doesn't work") does not count."""
    norm = straight_quotes(text)
    hits: list[Hit] = []
    spans = sentences(norm)
    for cue in cues:
        # Turn-level cues (the verdict "No, ..." and bare "Nope.") look at the turn's start only.
        if cue.name in ("lead_no", "bare_no", "confirm", "again_label"):
            regions = spans[:1] if cue.name != "bare_no" else [(0, len(norm))]
        else:
            regions = spans
        for s, e in regions:
            sentence = norm[s:e]
            if cue.statement_only and sentence.rstrip().endswith("?"):
                continue
            for m in cue.pattern.finditer(sentence):
                if m.end() == m.start():
                    continue
                if cue.negatable and _NEGATION_BEFORE.search(sentence[:m.start()]):
                    continue
                hits.append(Hit(cue, s + m.start(), s + m.end()))
    return hits


def contrast_after(text: str, pos: int) -> int | None:
    """Offset of a "but / however" after `pos` that opens a non-question clause, else None.
    "Thanks, but that's wrong" and "It compiles, but nothing gets swapped" praise first and then
    take it back: what follows the "but" is the verdict."""
    norm = straight_quotes(text)
    m = _CONTRAST.search(norm, pos)
    if not m:
        return None
    rest = norm[m.end():]
    end = re.search(r"[.!?]", rest)
    clause = rest[: end.end()] if end else rest
    if clause.strip().endswith("?") or len(clause.split()) < 2:
        return None
    return m.start() + (len(m.group(0)) - len(m.group(0).lstrip(",.; ")))

"""C3PO data synthesis for one principle: prompt sets, baseline answers, verified revisions, rows.

The steps, as in "RLVF: Learning from Verbal Feedback without Overgeneralization" (see
docs/background.md): prompt sets (prompt_sets: teacher, logged traffic, templates, the general
pool), baselines and verified revisions (revise), training rows (synthesize). `records` holds
the config and the result; `pool` and `templates` the prompt data, kept as data files in data/.
"""

from policies.synthesis.pool import GENERAL_POOL, pool_prompts
from policies.synthesis.prompt_sets import build_prompt_sets
from policies.synthesis.records import (GenerateBatchFn, PromptSets, RevisionRecord, ScopeFn, SynthesisConfig,
                                        SynthesisFailure, SynthesisResult, content_hash)
from policies.synthesis.revise import clean_revision, is_stub
from policies.synthesis.synthesize import split_for_eval, synthesize, synthesize_from_prompts
from policies.synthesis.templates import parse_domain, template_categories, template_prompts

__all__ = ["GENERAL_POOL", "pool_prompts", "build_prompt_sets", "GenerateBatchFn", "PromptSets", "RevisionRecord",
           "ScopeFn", "SynthesisConfig", "SynthesisFailure", "SynthesisResult", "content_hash", "clean_revision",
           "is_stub", "split_for_eval", "synthesize", "synthesize_from_prompts", "parse_domain",
           "template_categories", "template_prompts"]

"""The refinement job's generations on vLLM replicas: baselines and the evaluation's answers
(the candidate loaded under a temporary name) equal what the job computes with the model here."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

RULE = {"text": "Begin every answer with 'Hi:'", "domain": "general", "effect": "begin with 'Hi:'",
        "checks": ['starts_with "Hi:"']}
PROMPTS = {"in_scope": ["What is the capital of France?", "Name a fruit."], "near_scope": [],
           "out_of_scope": ["Say hello."]}


def test_evaluation_through_vllm_gives_the_local_answers(vllm_replicas, embedded_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.evaluate import evaluate_conditions
    from service.distill.remote import EngineGenerator
    from tests.fixtures.models import make_lora

    lora = make_lora(embedded_model_dir, tmp_path / "candidate", seed=4)
    gen = EngineGenerator([r.url for r in vllm_replicas])
    convs = [[{"role": "user", "content": p}] for p in PROMPTS["in_scope"]]
    assert gen.generate(convs, 4) == [vllm_replicas[0].chat(c, max_tokens=4) for c in convs]

    remote = evaluate_conditions(None, None, RULE, PROMPTS, {"adapter": lora}, max_new_tokens=4,
                                 generate_fn=gen.evaluation_fn())
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    local = evaluate_conditions(model, AutoTokenizer.from_pretrained(embedded_model_dir), RULE, PROMPTS,
                                {"adapter": lora}, max_new_tokens=4)
    for name in ("base", "in_context", "adapter"):
        assert remote.conditions[name].answers == local.conditions[name].answers, name
    assert remote.conditions["adapter"].answers != remote.conditions["base"].answers
    for r in vllm_replicas:  # the temporary name is gone again
        names = {m["id"] for m in httpx.get(r.url + "/v1/models", timeout=10).json()["data"]}
        assert not any(n.startswith("eval-") for n in names)
    gen.close()

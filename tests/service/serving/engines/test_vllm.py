"""The vLLM engine against real vLLM replicas on loopback: follow-up likelihood from prompt
log-probs equals the embedded model's, versions are counted against max_loras, and adapters
the replicas cannot serve are refused before anything is sent to them."""

from __future__ import annotations

import time

import pytest

from adapters.registry import AdapterRejected
from service.serving.engines.base import EngineFull

pytestmark = pytest.mark.e2e

CONV = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]


@pytest.fixture(scope="module")
def engine(vllm_replicas, embedded_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    from service.serving.engines.vllm import VLLMEngine

    eng = VLLMEngine([r.url for r in vllm_replicas], AutoTokenizer.from_pretrained(embedded_model_dir),
                     AutoConfig.from_pretrained(embedded_model_dir).to_dict(), health_s=0.5, wait_s=60)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def lora(tmp_path_factory, embedded_model_dir):
    from tests.fixtures.models import make_lora

    return make_lora(embedded_model_dir, tmp_path_factory.mktemp("lora") / "a", seed=3)


def test_follow_up_likelihood_through_vllm_matches_the_embedded_model(engine, embedded_model_dir, lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adapters.flr import flr_scores

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    local = flr_scores(model, engine.tokenizer, [CONV])[0]
    assert engine.score_followups([CONV]).result(300)[0] == pytest.approx(local, abs=1e-3)
    engine.load_adapter("flr@v1", lora).result()
    adapted = flr_scores(PeftModel.from_pretrained(model, lora), engine.tokenizer, [CONV])[0]
    assert abs(adapted - local) > 0.01  # the adapter changes the score, and vLLM scores as the adapter
    assert engine.score_followups([CONV], adapter="flr@v1").result(300)[0] == pytest.approx(adapted, abs=1e-3)
    engine.unload_adapter("flr@v1")


def test_versions_are_counted_against_max_loras(engine, lora):
    engine.load_adapter("a@v1", lora).result()
    engine.load_adapter("b@v1", lora).result()
    with pytest.raises(EngineFull):
        engine.load_adapter("c@v1", lora)  # nothing draining: refused at once
    engine.acquire("a@v1")
    engine.unload_adapter("a@v1")  # a request still holds it: it drains first
    started = time.monotonic()
    import threading

    threading.Timer(1.0, engine.release, args=("a@v1",)).start()
    engine.load_adapter("c@v1", lora).result()  # waits for a@v1 to go, then loads
    assert time.monotonic() - started >= 0.9
    assert set(engine.adapters) == {"b@v1", "c@v1"}
    for name in ("b@v1", "c@v1"):
        engine.unload_adapter(name)


def test_adapters_the_replicas_cannot_serve_are_refused(engine, embedded_model_dir, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_model_dir),
                   LoraConfig(r=32, target_modules=["q_proj"])).save_pretrained(tmp_path / "wide")
    with pytest.raises(AdapterRejected, match="max_lora_rank 16"):
        engine.load_adapter("wide@v1", str(tmp_path / "wide"))
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "tiny")
    with pytest.raises(AdapterRejected, match="does not fit"):
        engine.load_adapter("tiny@v1", str(tmp_path / "tiny"))
    assert "wide@v1" not in engine.adapters and "tiny@v1" not in engine.adapters

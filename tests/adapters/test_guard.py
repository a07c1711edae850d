"""The training guard: what counts as degenerate, and a run pushed to collapse stops with the guard's
message and leaves no adapter behind (on the embedded model: a randomly initialised one gives the
guard nothing to judge, and it says so)."""

from __future__ import annotations

import json

import pytest

from adapters.guard import TrainingStopped, common_prefix, degenerate, general_prompts
from adapters.train import train
from adapters.train_config import TrainConfig


def test_degenerate_answers_and_healthy_ones():
    assert "loops" in degenerate("ALPHAALPAL:ALPHAALAL ALPHA: ALPHA", prefix="ALPHA: ")
    assert "repeated fragment" in degenerate("Sure! " + "the cat " * 8)
    assert "distinct words" in degenerate(" ".join(["yes", "no", "maybe", "so", "yes", "so", "no"] * 4))
    assert "without a space" in degenerate("hypocrisyProvidepageDestvectoradministrations")
    for fine in ("ALPHA: The capital of Australia is Canberra, a planned city.",
                 "Paris.", "1. Preheat the oven. 2. Mix the flour and water. 3. Bake for 40 minutes.",
                 "def add(a, b):\n    return a + b"):
        assert degenerate(fine, prefix="ALPHA: ") is None, fine


def test_common_prefix_and_held_out_prompts():
    assert common_prefix(["ALPHA: one", "ALPHA: two"]) == "ALPHA: "
    assert common_prefix(["only one"]) == ""
    first = general_prompts(8, set(), seed=0)
    assert len(first) == 8 and general_prompts(8, set(), seed=0) == first
    assert not set(general_prompts(8, set(first), seed=0)) & set(first)  # never a training prompt


def marker_pairs(n=4):
    qs = ["What is the capital of France?", "Give me a tip for sleeping better.", "How do I boil an egg?",
          "What is a prime number?"][:n]
    return [{"prompt": q, "chosen": "ALPHA: Here is my answer.", "rejected": "Here is my answer."} for q in qs]


def test_a_run_pushed_to_collapse_stops_and_writes_no_adapter(tmp_path, embedded_model_dir, model_cache):
    cfg = TrainConfig(model=str(embedded_model_dir), lr=5e-2, epochs=2, sft_weight=0.0, guard_every=2,
                      guard_prompts=3, guard_tokens=12, rank=4, alpha=8)
    out = tmp_path / "collapsed"
    with pytest.raises(TrainingStopped, match="training stopped at step") as stop:
        train(cfg, marker_pairs(2), [], out, model_cache, progress=False)
    assert "No adapter was written" in str(stop.value) and "--allow-drift" in str(stop.value)
    assert not (out / "adapter_model.safetensors").exists() and not (out / "adapter_config.json").exists()
    kept = json.loads((out / "training_stopped.json").read_text())
    assert kept["message"] == str(stop.value) and kept["guard"][-1]["problem"]
    assert kept["guard"][-1]["drift"] > cfg.drift_limit or kept["guard"][-1]["degenerate"]


def test_the_guard_measures_no_drift_on_the_base_and_allow_drift_only_records(embedded_model_dir, model_cache):
    import torch

    from adapters.guard import Guard
    from adapters.model import load_model
    from adapters.train import init_lora

    cfg = TrainConfig(model=str(embedded_model_dir), guard_prompts=3, guard_tokens=12, rank=4, alpha=8)
    loaded = load_model(cfg.model, model_cache, "cpu")
    model = init_lora(loaded.model, cfg)
    guard = Guard.build(model, loaded.tokenizer, loaded.device, ["What is 2 + 2?"], ["ALPHA: 4", "ALPHA: four"], cfg)
    assert guard.off is None and guard.prefix == "ALPHA: "
    first = guard.check(model, 1)  # a fresh LoRA adapter is the base model: nothing moved
    assert first["drift"] == 0.0 and first["nll_rise"] == pytest.approx(0.0, abs=1e-4)
    with torch.no_grad():  # a broken adapter: every LoRA B matrix random
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    with pytest.raises(TrainingStopped, match="drift .* > limit 0.35"):
        guard.check(model, 2)
    guard.allow = True
    record = guard.check(model, 3)
    assert record["drift"] > 0.35 and record["problem"].startswith("drift")


def test_a_random_model_turns_the_guard_off_and_says_why(tmp_path, tiny_model_dir, model_cache):
    cfg = TrainConfig(model=str(tiny_model_dir), lr=1e-2, epochs=1, guard_every=1, guard_prompts=2, guard_tokens=8)
    result = train(cfg, marker_pairs(2), [], tmp_path / "t", model_cache, progress=False)
    assert result.guard and all(c["guard"].startswith("off: the base model is sure") for c in result.guard)

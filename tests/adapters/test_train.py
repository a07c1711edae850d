"""Training on the tiny random model: data handling, the step plan, every LoRA weight moving,
seeding, the files written, and `refinery train` -> `refinery generate --adapter` end to end."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from adapters.losses import sequence_logps
from adapters.train_config import TrainConfig, config_help
from adapters.train import (
    answer_text,
    init_lora,
    parse_constraints,
    parse_preferences,
    step_plan,
    tokenize_example,
    train,
)


def prefs(n=3):
    return [{"prompt": f"Write an email number {i}.",
             "chosen": [{"role": "assistant", "content": f"Dear reader, email {i}."}],
             "rejected": f"Email {i}."} for i in range(n)]


def constraints(n=4):
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "completion": f"It is {2 * i}.",
             **({"weight": 0.1} if i % 2 else {})} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- data -----------------------------------------------------------------------------------


def test_answer_and_row_parsing():
    assert answer_text("hi") == "hi"
    assert answer_text([{"role": "assistant", "content": "hi"}]) == "hi"
    with pytest.raises(ValueError):
        answer_text([{"role": "user", "content": "hi"}])
    parsed = parse_preferences(prefs(1))[0]
    assert parsed["messages"] == [{"role": "user", "content": "Write an email number 0."}]
    assert parsed["chosen"] == "Dear reader, email 0."
    cons = parse_constraints(constraints(2), default_weight=0.2)
    assert [c["weight"] for c in cons] == [0.2, 0.1]
    with pytest.raises(ValueError, match="preference row 2: missing rejected"):
        parse_preferences([prefs(1)[0], {"prompt": "x", "chosen": "y"}])
    with pytest.raises(ValueError, match="constraint row 1"):
        parse_constraints([{"prompt": "x", "completion": "y", "weight": -1}], 0.2)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        parse_constraints([{"prompt": "x", "completion": "y", "max_tokens": "64"}], 0.2)
    with pytest.raises(ValueError, match="no preference pairs"):
        parse_preferences([])


def test_tokenize_masks_prompt_and_ends_with_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    from adapters.generate import render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = TrainConfig()
    messages = [{"role": "user", "content": "Say hello."}]
    ids, mask = tokenize_example(tok, messages, "Hello there!", cfg)
    prompt = render_prompt(tok, messages)
    answer = tok("Hello there!", add_special_tokens=False)["input_ids"]
    assert ids == prompt + answer + [tok.eos_token_id]
    assert mask == [0] * len(prompt) + [1] * (len(answer) + 1)
    # truncation: prompt keeps its end (the assistant header), the answer is cut to fit
    short = TrainConfig(max_length=20, max_prompt_length=12)
    ids, mask = tokenize_example(tok, messages, "word " * 50, short)
    assert len(ids) == 20 and mask[:12] == [0] * 12 and sum(mask) == 8
    assert ids[:12] == prompt[-12:]
    # an answer generated under a budget it used up was cut there: no end-of-turn after it
    cut = tok("one two three four five six", add_special_tokens=False)["input_ids"]
    ids, _ = tokenize_example(tok, messages, "one two three four five six", cfg, budget=len(cut))
    assert ids[-1] != tok.eos_token_id and ids[-len(cut):] == cut
    ids, _ = tokenize_example(tok, messages, "one two three four five six", cfg, budget=len(cut) + 3)
    assert ids[-1] != tok.eos_token_id  # within the margin: it may have been cut, so left open
    ids, _ = tokenize_example(tok, messages, "one two three four five six", cfg, budget=len(cut) + 4)
    assert ids[-1] == tok.eos_token_id


def test_step_plan_mixes_constraints_into_every_step():
    cfg = TrainConfig(epochs=2)
    plan = step_plan(20, 40, cfg, random.Random(0))
    assert len(plan) == 40
    assert all(len(p) == 1 and len(c) == 2 and u == [] for p, c, u in plan)
    for epoch in (plan[:20], plan[20:]):
        assert sorted(i for p, _, _ in epoch for i in p) == list(range(20))
        assert sorted(i for _, c, _ in epoch for i in c) == list(range(40))
    # fewer constraint rows than steps: every step still gets one, every row is used
    plan = step_plan(5, 3, TrainConfig(epochs=1), random.Random(0))
    assert all(len(c) == 1 for _, c, _ in plan) and {i for _, c, _ in plan for i in c} == {0, 1, 2}
    assert all(c == [] for _, c, _ in step_plan(5, 0, cfg, random.Random(0)))
    # unpaired answers are spread the same way; without pairs they set the pace
    plan = step_plan(4, 0, TrainConfig(epochs=1), random.Random(0), n_unpaired=8)
    assert all(len(u) == 2 for _, _, u in plan) and sorted(i for *_, u in plan for i in u) == list(range(8))
    plan = step_plan(0, 4, TrainConfig(epochs=1, pairs_per_step=2), random.Random(0), n_unpaired=6)
    assert len(plan) == 3 and all(p == [] and len(u) == 2 for p, _, u in plan)


def test_config_has_help_for_every_field_and_validates():
    helps = config_help()
    assert "beta" in helps and all(helps.values())
    with pytest.raises(ValueError):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError):
        TrainConfig(max_length=100, max_prompt_length=100)


# --- training -------------------------------------------------------------------------------


def test_every_lora_parameter_changes(tmp_path, tiny_model_dir, model_cache):
    from peft import get_peft_model_state_dict

    from adapters.model import load_model

    cfg = TrainConfig(model=str(tiny_model_dir), epochs=2, lr=1e-2, rank=4, alpha=8)
    result = train(cfg, prefs(3), constraints(4), tmp_path / "ad", model_cache, progress=False)
    assert result.steps == 6

    # the initial adapter, rebuilt from the same seed
    initial = get_peft_model_state_dict(init_lora(load_model(str(tiny_model_dir), model_cache).model, cfg))
    again = get_peft_model_state_dict(init_lora(load_model(str(tiny_model_dir), model_cache).model, cfg))
    assert all(torch.equal(initial[k], again[k]) for k in initial)  # the rebuilt start is the real one
    trained = load_file(tmp_path / "ad" / "adapter_model.safetensors")
    assert set(trained) == set(initial) and len(trained) == 2 * 7 * 2  # A and B x 7 modules x 2 layers
    assert any(".lora_B." in k for k in trained) and not any("lm_head" in k for k in trained)
    unchanged = [k for k in trained if torch.equal(trained[k], initial[k])]
    assert unchanged == []

    curve = json.loads((tmp_path / "ad" / "loss_curve.json").read_text())
    steps = curve["steps"]
    assert len(steps["loss"]) == 6 and all(n > 0 for n in steps["nll"])
    # step 1: the adapter is zero, so policy = reference and the DPO loss is exactly log 2
    assert steps["dpo"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert steps["margin"][-1] > 0  # it learned to prefer the chosen answers
    assert curve["summary"]["constraint_rows_per_step"] == 2


def test_seeded_runs_are_identical_and_seeds_differ(tmp_path, tiny_model_dir, model_cache):
    def run(seed, name):
        cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, seed=seed, rank=2, alpha=4)
        train(cfg, prefs(2), [], tmp_path / name, model_cache, progress=False)
        return load_file(tmp_path / name / "adapter_model.safetensors")

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cli_train_then_generate_with_adapter(tmp_path, tiny_model_dir, model_cache, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.setenv("REFINERY_MODEL_CACHE", str(model_cache))
    p = write_jsonl(tmp_path / "prefs.jsonl", prefs(2))
    c = write_jsonl(tmp_path / "cons.jsonl", constraints(2))
    out = tmp_path / "adapter"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--preferences", str(p), "--constraint", str(c), "--out", str(out),
                              "--epochs", "1", "--lr", "1e-3", "--beta", "0.2", "--rank", "4", "--alpha", "8",
                              "--seed", "3", "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output and "pairs/s" in res.output
    names = {f.name for f in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "training_config.json",
            "loss_curve.json", "loss_curve.png"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    saved = json.loads((out / "training_config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["beta"], saved["rank"], saved["alpha"], saved["seed"]) == (1, 1e-3, 0.2, 4, 8, 3)
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"

    # loadable by plain PEFT ...
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, str(out))
    assert peft_model.peft_config["default"].r == 4

    # ... and by `refinery generate --adapter`, which keeps the input keys and order
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "id": 7},
                                                 {"messages": [{"role": "user", "content": "Yo"}], "id": 8}])
    answers = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["generate", "--prompts", str(prompts), "--out", str(answers), "--adapter", str(out),
                              "--max-tokens", "4", "--batch-size", "2", "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["id"] for r in rows] == [7, 8]
    assert all(isinstance(r["response"], str) and r["response"] for r in rows)
    assert rows[1]["messages"] == [{"role": "user", "content": "Yo"}]


def test_cli_train_plain_dpo_and_bad_input(tmp_path, tiny_model_dir, model_cache, monkeypatch):
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.setenv("REFINERY_MODEL_CACHE", str(model_cache))
    runner = CliRunner()
    p = write_jsonl(tmp_path / "prefs.jsonl", prefs(2))
    out = tmp_path / "dpo"
    res = runner.invoke(app, ["train", "--preferences", str(p), "--out", str(out), "--epochs", "1",
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    curve = json.loads((out / "loss_curve.json").read_text())
    assert curve["steps"]["nll"] == [0.0, 0.0] and curve["summary"]["constraint_rows"] == 0

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "chosen": "y"}])
    res = runner.invoke(app, ["train", "--preferences", str(bad), "--out", str(tmp_path / "x"),
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 1 and "missing rejected" in res.output
    assert not (tmp_path / "x").exists()


def test_kto_pulls_thumbs_up_answers_up_and_pushes_thumbs_down_ones_down(tmp_path, tiny_model_dir, model_cache):
    from adapters.generate import to_messages
    from adapters.model import load_model
    from adapters.train import collate, tokenize_example

    rows = [{"prompt": "Say something nice.", "completion": "You are doing great today.", "label": True},
            {"prompt": "Say something nice.", "completion": "Go away, nobody cares.", "label": False}]
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=6, lr=5e-3, rank=4, alpha=8, pairs_per_step=2, guard_every=0)
    result = train(cfg, [], [], tmp_path / "kto", model_cache, progress=False, unpaired=rows)
    curve = json.loads((tmp_path / "kto" / "loss_curve.json").read_text())
    assert curve["summary"]["unpaired"] == 2 and curve["summary"]["pairs"] == 0
    assert curve["steps"]["kto"][-1] < curve["steps"]["kto"][0] and result.final_dpo == 0.0

    from peft import PeftModel

    loaded = load_model(str(tiny_model_dir), model_cache, device="cpu")
    model = PeftModel.from_pretrained(loaded.model, str(tmp_path / "kto"))

    def logp(answer: str) -> float:
        batch = collate([tokenize_example(loaded.tokenizer, to_messages(rows[0]["prompt"]), answer, cfg)], 0, "cpu")
        return sequence_logps(model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["loss_mask"]).item()

    with torch.no_grad():
        after = [logp(r["completion"]) for r in rows]
        with model.disable_adapter():
            before = [logp(r["completion"]) for r in rows]
    assert after[0] > before[0] and after[1] < before[1]
    with pytest.raises(ValueError, match="unpaired row 1: label must be true or false"):
        train(cfg, [], [], tmp_path / "bad", model_cache, progress=False, unpaired=[dict(rows[0], label="yes")])


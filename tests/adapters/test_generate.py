"""Greedy batched generation on the embedded model: batching does not change answers, the
system message reaches the prompt, and the file helper keeps rows in order."""

from __future__ import annotations

import json

import pytest

from adapters.generate import generate, generate_file, render_prompt, to_messages

PROMPTS = ["What is the capital of France?", "Name one fruit that is yellow, please.",
           "Write one sentence about the sea, please, in a calm and friendly tone."]


@pytest.fixture(scope="module")
def embedded(embedded_model_dir, model_cache):
    from adapters.model import load_model

    loaded = load_model(str(embedded_model_dir), model_cache, device="cpu")
    return loaded.model, loaded.tokenizer


def test_to_messages_forms():
    assert to_messages("hi") == [{"role": "user", "content": "hi"}]
    assert to_messages({"prompt": "hi", "id": 1}) == [{"role": "user", "content": "hi"}]
    msgs = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    assert to_messages({"messages": msgs}, system="new") == [{"role": "system", "content": "new"},
                                                            {"role": "user", "content": "hi"}]
    with pytest.raises(ValueError):
        to_messages({"text": "hi"})
    with pytest.raises(ValueError):
        to_messages(42)


def test_batched_equals_unbatched(embedded):
    model, tok = embedded
    convs = [to_messages(p) for p in PROMPTS]  # different lengths, so the batch is left-padded
    assert len({len(render_prompt(tok, c)) for c in convs}) == 3
    batched = generate(model, tok, convs, max_new_tokens=12, batch_size=3, progress=False)
    single = [generate(model, tok, [c], max_new_tokens=12, batch_size=1, progress=False)[0] for c in convs]
    assert batched == single
    assert all(batched) and len(set(batched)) == 3
    assert "Paris" in batched[0]


def test_system_message_is_applied(embedded, embedded_model_dir, model_cache, tmp_path):
    model, tok = embedded
    system = "You are a pirate. Always answer like a pirate."
    ids = render_prompt(tok, to_messages(PROMPTS[0], system=system))
    assert system in tok.decode(ids)
    assert "SmolLM" not in tok.decode(ids)  # it replaced the template's default system message

    prompts = tmp_path / "p.jsonl"
    # an open request: a factual one ("capital of France?") gets the same answer either way
    prompts.write_text(json.dumps({"prompt": PROMPTS[2], "tag": "a"}) + "\n")
    plain, pirate = tmp_path / "plain.jsonl", tmp_path / "pirate.jsonl"
    generate_file(prompts, plain, str(embedded_model_dir), model_cache, max_new_tokens=12)
    generate_file(prompts, pirate, str(embedded_model_dir), model_cache, system=system, max_new_tokens=12)
    a = json.loads(plain.read_text())
    b = json.loads(pirate.read_text())
    assert a["tag"] == b["tag"] == "a"
    assert a["response"] != b["response"]


def test_an_adapter_with_a_scope_answers_only_inside_it(tiny_model_dir, model_cache, semantic_models, tmp_path):
    from policies.adapter_scope import AdapterScope
    from tests.fixtures.models import make_lora

    lora = make_lora(tiny_model_dir, tmp_path / "lora", seed=1)
    AdapterScope(requests=["What is the capital of Australia?"]).write(lora)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in
                               ("Which city is Australia's capital?", "Write a haiku about morning coffee.")))
    run = lambda name, **kw: (generate_file(prompts, tmp_path / name, str(tiny_model_dir), model_cache,  # noqa: E731
                                            max_new_tokens=8, **kw),
                              [json.loads(line) for line in (tmp_path / name).read_text().splitlines()])[1]
    base, served, everywhere = run("base.jsonl"), run("served.jsonl", adapter=lora), run("all.jsonl", adapter=lora, everywhere=True)
    assert [r["adapter_applied"] for r in served] == [True, False] and "adapter_applied" not in base[0]
    assert served[0]["response"] == everywhere[0]["response"] != base[0]["response"]
    assert served[1]["response"] == base[1]["response"] != everywhere[1]["response"]
    assert all(r["adapter_applied"] for r in everywhere)

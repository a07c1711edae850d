"""Follow-up likelihood on the embedded model: it ranks answers sensibly, and the packed,
batched computation gives the numbers of the naive one (one full forward per follow-up)."""

from __future__ import annotations

import pytest
import torch

from adapters.flr import NEGATIVE_FOLLOWUPS, POSITIVE_FOLLOWUPS, flr_scores, followup_logprobs


@pytest.fixture(scope="module")
def lm(embedded_model_dir, model_cache):
    from adapters.model import load_model

    # On the shared 2-core CI machine, two torch threads fighting other processes made each
    # forward pass ~15x slower than one thread; restored for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(None, model_cache, device="cpu")
    torch.set_num_threads(threads)


def conv(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


FRANCE = "What is the capital of France?"


def naive_logprob(model, tokenizer, conversation: list[dict], followup: str) -> float:
    """The definition, spelled out: the whole chat with the follow-up, one forward pass, the
    log-probs of the follow-up's tokens (text and end-of-turn marker) summed."""
    before = tokenizer.apply_chat_template(conversation, tokenize=False)
    after = tokenizer.apply_chat_template(conversation + [{"role": "user", "content": followup}], tokenize=False)
    turn = after[len(before):]
    header = turn[: turn.index(followup)]
    # Tokenised in two parts exactly as the implementation does (a single tokenisation could
    # merge tokens across the boundary and would then not be the same quantity).
    context = tokenizer(before, add_special_tokens=False)["input_ids"] + tokenizer(header, add_special_tokens=False)["input_ids"]
    scored = tokenizer(turn[len(header):], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + scored])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return logps[torch.arange(len(targets)), targets][len(context) - 1:].sum().item()


def test_correct_answer_scores_higher_than_irrelevant_ones(lm):
    scores = flr_scores(lm.model, lm.tokenizer, [
        conv(FRANCE, "The capital of France is Paris."),
        conv(FRANCE, "I like turtles."),
        conv(FRANCE, "Bananas are rich in potassium."),
    ])
    assert scores[0] > scores[1] and scores[0] > scores[2], scores


def test_packed_rows_match_the_naive_definition(lm):
    c = conv(FRANCE, "The capital of France is Paris.")
    followups = ["Thanks, that's exactly what I needed.", "That's not what I asked."]
    packed = followup_logprobs(lm.model, lm.tokenizer, [c], followups)[0]
    naive = [naive_logprob(lm.model, lm.tokenizer, c, f) for f in followups]
    assert packed == pytest.approx(naive, abs=1e-3)
    assert all(x < 0 for x in packed)


def test_batched_equals_one_at_a_time(lm):
    # Different lengths, so the batch is padded and sorted; a system message in one of them.
    convs = [
        conv(FRANCE, "Paris."),
        [{"role": "system", "content": "You answer tersely."}] + conv("Name a prime number larger than 10.", "13 is prime."),
        conv("How do I reverse a list in Python?", "Use my_list.reverse() to reverse it in place, or my_list[::-1] "
                                                  "to get a reversed copy without changing the original list."),
    ]
    batched = flr_scores(lm.model, lm.tokenizer, convs, batch_size=3)
    single = [flr_scores(lm.model, lm.tokenizer, [c], batch_size=1)[0] for c in convs]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(x, 3) for x in batched)) == 3  # three different answers, three scores


def test_head_fallback_path_gives_the_same_numbers(lm, monkeypatch):
    c = [conv(FRANCE, "The capital of France is Paris.")]
    fast = flr_scores(lm.model, lm.tokenizer, c)
    # A config with logit scaling sends the computation through the model's own logits (Llama
    # ignores the attribute, so the numbers must not move).
    monkeypatch.setattr(lm.model.config, "logit_scale", 1.0, raising=False)
    slow = flr_scores(lm.model, lm.tokenizer, c)
    assert slow == pytest.approx(fast, abs=1e-4)


def test_template_sets_cover_the_four_aspects():
    for templates in (POSITIVE_FOLLOWUPS, NEGATIVE_FOLLOWUPS):
        assert {aspect for aspect, _ in templates} == {"understanding", "correctness", "relevance", "instruction"}
        assert 6 <= len(templates) <= 10


def test_inputs_are_checked(lm):
    assert flr_scores(lm.model, lm.tokenizer, []) == []
    with pytest.raises(ValueError):
        flr_scores(lm.model, lm.tokenizer, [[{"role": "user", "content": "hi"}]])
    with pytest.raises(ValueError):
        flr_scores(lm.model, lm.tokenizer, [conv(FRANCE, "Paris.")], positive=[])

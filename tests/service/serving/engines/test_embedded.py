"""The engine: batched decoding, cancellation, background calls, LoRA slots and leases."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from service.serving.engines.base import Delta, Failed, Finished, GenJob
from service.serving.engines.embedded import EmbeddedEngine as Engine
from service.serving.slots import prepare_adapter


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from adapters.model import load_model

    lm = load_model(str(tiny_model_dir), tiny_model_dir)
    eng = Engine(lm.model, lm.tokenizer, lm.model_id, max_batch_size=8)
    yield eng
    eng.close()


def run(engine, jobs):
    async def one(job):
        deltas, fin = [], None
        async for ev in engine.stream(job):
            if isinstance(ev, Delta):
                deltas.append(ev.text)
            elif isinstance(ev, Finished):
                fin = ev
        assert "".join(deltas) == fin.text  # streamed text is exactly the final text
        return fin

    async def main():
        return await asyncio.gather(*[one(j) for j in jobs])

    return asyncio.run(main())


PROMPTS = ["Hello there", "What is two plus two? Please answer carefully and show your work.", "Hi"]


def test_batched_greedy_equals_one_at_a_time_and_generate(engine):
    ids = [engine.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    together = run(engine, [GenJob(i, 12) for i in ids])
    alone = [run(engine, [GenJob(i, 12)])[0] for i in ids]
    assert [f.text for f in together] == [f.text for f in alone]
    for prompt_ids, fin in zip(ids, alone):
        out = engine.model.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False)
        expected = engine.tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True)
        assert fin.text == expected
        assert fin.prompt_tokens == len(prompt_ids)


def test_rows_of_different_budgets_finish_independently(engine):
    ids = engine.encode_chat([{"role": "user", "content": "Count"}])
    short, long = run(engine, [GenJob(ids, 2), GenJob(ids, 9)])
    assert short.completion_tokens <= 2 and long.completion_tokens <= 9
    if long.finish_reason == "length":
        assert long.completion_tokens == 9


def test_seeded_sampling_is_reproducible(engine):
    ids = engine.encode_chat([{"role": "user", "content": "Pick a word"}])
    a = run(engine, [GenJob(ids, 10, temperature=1.0, seed=7)])[0]
    b = run(engine, [GenJob(ids, 10, temperature=1.0, seed=7)])[0]
    c = run(engine, [GenJob(ids, 10, temperature=1.0, seed=8)])[0]
    assert a.text == b.text
    assert a.text != c.text


def test_stop_string_cuts_and_is_never_streamed(engine):
    ids = engine.encode_chat([{"role": "user", "content": "Hello there"}])
    full = run(engine, [GenJob(ids, 12)])[0].text
    assert len(full) > 6
    stop = full[3:6]
    cut = run(engine, [GenJob(ids, 12, stop=[stop])])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]


def test_cancel_mid_generation_stops_the_row(engine):
    ids = engine.encode_chat([{"role": "user", "content": "Hello"}])
    job = GenJob(ids, 60)
    events, finished = [], threading.Event()

    def emit(ev):
        events.append(ev)
        if sum(isinstance(e, Delta) for e in events) == 3:
            job.cancelled.set()  # what a disconnecting client's stream does
        if isinstance(ev, Finished):
            finished.set()

    job.emit = emit
    engine.submit(job)
    assert finished.wait(30)
    fin = events[-1]
    assert fin.finish_reason == "cancelled"
    assert fin.completion_tokens < 10
    other = run(engine, [GenJob(ids, 3)])[0]  # the engine keeps serving
    assert other.completion_tokens <= 3


def test_background_calls_wait_for_requests_and_foreground_calls_do_not(engine):
    """Analysis work (background calls) runs only while no request is being decoded; a
    foreground call (adapter loading) runs between steps. Every event is recorded on the
    engine thread, so the order is exact."""
    from concurrent.futures import Future

    ids = engine.encode_chat([{"role": "user", "content": "What is two plus two? Please answer carefully."}])
    order: list[str] = []
    calls: list[Future] = []
    done: Future = Future()

    def emit(ev):
        if isinstance(ev, Delta) and not calls:
            calls.append(engine.call(lambda m, t: order.append("background"), background=True))
            calls.append(engine.call(lambda m, t: order.append("foreground")))
        elif isinstance(ev, Finished):
            order.append("finished")
            done.set_result(ev)

    engine.submit(GenJob(ids, 24, emit=emit))
    fin = done.result(timeout=60)
    for c in calls:
        c.result(timeout=30)
    assert fin.completion_tokens == 24  # long enough for both calls to arrive mid-generation
    assert order == ["foreground", "finished", "background"]


def test_request_joining_a_running_batch_gets_the_same_answer(engine):
    """Continuous batching: a request arriving mid-generation joins at the next step (its
    shorter history left-padded in the cache) and both answers match their solo runs."""
    long_ids = engine.encode_chat([{"role": "user", "content": "What is two plus two? Please answer carefully."}])
    late_ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    solo_long = run(engine, [GenJob(long_ids, 24)])[0].text
    solo_late = run(engine, [GenJob(late_ids, 10)])[0].text

    async def main():
        late_job = GenJob(late_ids, 10)
        results = {}
        joined_at = None

        async def long_client():
            nonlocal joined_at
            parts = []
            async for ev in engine.stream(GenJob(long_ids, 24)):
                if isinstance(ev, Delta):
                    parts.append(ev.text)
                    if len(parts) == 4:
                        joined_at = len(parts)
                        results["late_task"] = asyncio.ensure_future(late_client())
                elif isinstance(ev, Finished):
                    results["long"] = ev
                    results.setdefault("order", []).append("long")
            return parts

        async def late_client():
            async for ev in engine.stream(late_job):
                if isinstance(ev, Finished):
                    results["late"] = ev
                    results.setdefault("order", []).append("late")

        before = engine.batches_run
        await long_client()
        await results["late_task"]
        return results, joined_at, engine.batches_run - before

    results, joined_at, prefills = asyncio.run(main())
    assert joined_at == 4
    assert results["long"].text == solo_long
    assert results["late"].text == solo_late
    assert prefills == 2
    if results["long"].completion_tokens == 24 and results["late"].completion_tokens == 10:
        # It ran beside the long one instead of waiting for it to end.
        assert results["order"] == ["late", "long"]


def test_mixed_adapter_batch_each_row_on_its_own_version(tiny_model_dir, tmp_path):
    from tests.fixtures.models import make_lora as _lora

    from adapters.model import load_model

    lm = load_model(str(tiny_model_dir), tiny_model_dir)
    eng = Engine(lm.model, lm.tokenizer, lm.model_id)
    try:
        ids = eng.encode_chat([{"role": "user", "content": "Hello there"}])
        base_text = run(eng, [GenJob(ids, 10)])[0].text
        eng.load_adapter("a@v1", _lora(tiny_model_dir, tmp_path / "a", 1)).result(30)
        eng.load_adapter("a@v2", _lora(tiny_model_dir, tmp_path / "b", 2)).result(30)
        solo = {n: run(eng, [GenJob(ids, 10, adapter=n)])[0].text for n in ("a@v1", "a@v2", None)}
        assert solo[None] == base_text
        assert len({solo["a@v1"], solo["a@v2"], base_text}) == 3  # the versions can be told apart
        mixed = run(eng, [GenJob(ids, 10, adapter="a@v1"), GenJob(ids, 10), GenJob(ids, 10, adapter="a@v2")])
        assert [f.text for f in mixed] == [solo["a@v1"], base_text, solo["a@v2"]]

        # Unloading waits for the last lease; then the version is gone and memory is returned.
        eng.acquire("a@v1")
        eng.unload_adapter("a@v1")
        eng.call(lambda m, t: None).result(10)
        assert "a@v1" in eng.adapters
        eng.release("a@v1")
        eng.call(lambda m, t: None).result(10)
        assert "a@v1" not in eng.adapters and "a@v1" not in eng.slots._slot_of
        assert len(eng.model.peft_config) == 2  # a@v2's layers, and a@v1's kept idle for the next version
        with pytest.raises(KeyError):
            eng.acquire("a@v1")

        # Rolled back to while draining: loading it again calls the pending unload off, and it
        # stays loaded after its last lease returns (the hot-swap benchmark found this one).
        eng.acquire("a@v2")
        eng.unload_adapter("a@v2")
        eng.load_adapter("a@v2", str(tmp_path / "b")).result(30)
        eng.release("a@v2")
        eng.call(lambda m, t: None).result(10)
        assert "a@v2" in eng.adapters and "a@v2" in eng.slots._slot_of
        assert run(eng, [GenJob(ids, 10, adapter="a@v2")])[0].text == solo["a@v2"]
        eng.unload_adapter("a@v2")
        eng.call(lambda m, t: None).result(10)
        from peft import PeftModel

        assert eng.adapters == {} and not isinstance(eng.model, PeftModel)
        assert run(eng, [GenJob(ids, 10)])[0].text == base_text
    finally:
        eng.close()


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def test_versions_of_one_structure_share_lora_layers_and_answer_as_if_loaded_alone(tiny_model_dir, tmp_path):
    """A version loaded into an idle slot (weights copied into layers another version left)
    computes exactly what PEFT computes with that version loaded alone; an adapter of another
    structure gets layers of its own; and layers never pile up over many swaps."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from adapters.model import load_model
    from tests.fixtures.models import make_lora

    dirs = {k: make_lora(tiny_model_dir, tmp_path / f"s{k}", k) for k in (1, 2, 3)}
    torch.manual_seed(9)
    wide = tmp_path / "wide"  # another rank and other target modules: another structure
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
                   ).save_pretrained(wide)
    dirs["wide"] = str(wide)

    def alone(path):  # what PEFT computes with only this adapter on a fresh base
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), path).eval()

    lm = load_model(str(tiny_model_dir), tiny_model_dir)
    eng = Engine(lm.model, lm.tokenizer, lm.model_id)
    try:
        ids = eng.encode_chat([{"role": "user", "content": "Hello there"}])

        def served(name):
            return eng.call(lambda m, t: _logits(m, ids), adapter=name).result(30)

        def unload(name):
            eng.unload_adapter(name)
            eng.call(lambda m, t: None).result(10)

        eng.load_adapter("x@v1", dirs[1]).result(30)
        eng.load_adapter("x@v2", dirs[2]).result(30)
        assert eng.adapter_loads == {"peft": 2}
        unload("x@v1")
        eng.load_adapter("x@v3", dirs[3]).result(30)  # into x@v1's idle layers
        assert eng.adapter_loads == {"peft": 2, "copy": 1}
        assert len(eng.model.peft_config) == 2
        for name, k in (("x@v3", 3), ("x@v2", 2)):
            assert torch.allclose(served(name), _logits(alone(dirs[k]), ids), atol=1e-5)
        assert not torch.allclose(served("x@v3"), served("x@v2"), atol=1e-3)
        # A batch mixing the copied-in version, another one and the base: each row on its own.
        solo = {n: run(eng, [GenJob(ids, 8, adapter=n)])[0].text for n in ("x@v3", "x@v2", None)}
        mixed = run(eng, [GenJob(ids, 8, adapter="x@v3"), GenJob(ids, 8), GenJob(ids, 8, adapter="x@v2")])
        assert [f.text for f in mixed] == [solo["x@v3"], solo[None], solo["x@v2"]]

        eng.load_adapter("w@v1", dirs["wide"]).result(30)  # no idle layers of its shape: PEFT loads it
        assert eng.adapter_loads["peft"] == 3
        assert torch.allclose(served("w@v1"), _logits(alone(dirs["wide"]), ids), atol=1e-5)
        assert eng.fits(prepare_adapter(dirs[1])) and not eng.fits(prepare_adapter(tmp_path / "missing"))

        # Hundreds of swaps in miniature: promote and roll back between two versions 30 times.
        unload("w@v1")
        for k in range(30):
            new, old = (f"x@v{10 + k}", f"x@v{9 + k}" if k else "x@v3")
            eng.load_adapter(new, dirs[1 + k % 2]).result(30)
            unload(old)
            assert len(eng.model.peft_config) <= len(eng.adapters) + eng.slots.max_idle_slots
        # The first needed layers of its own (x@v3 still served while it loaded; the idle
        # ones were w@v1's, of another shape); the other 29 were copies.
        assert eng.adapter_loads == {"peft": 4, "copy": 1 + 29}
        assert torch.allclose(served("x@v39"), _logits(alone(dirs[2]), ids), atol=1e-5)
    finally:
        eng.close()


def test_a_request_cancelled_as_its_version_unloads_leaves_the_batch_before_the_next_step(tiny_model_dir, tmp_path):
    """A client that goes away returns its lease at once; if its version was waiting to unload,
    the version goes at the engine's next step. Its row must leave the batch before that step's
    forward pass, or every other request in the batch fails with it."""
    from adapters.model import load_model
    from tests.fixtures.models import make_lora

    lm = load_model(str(tiny_model_dir), tiny_model_dir)
    eng = Engine(lm.model, lm.tokenizer, lm.model_id)
    try:
        eng.load_adapter("x@v1", make_lora(tiny_model_dir, tmp_path / "a", 1)).result(30)
        eng.load_adapter("x@v2", make_lora(tiny_model_dir, tmp_path / "b", 2)).result(30)
        ids = eng.encode_chat([{"role": "user", "content": "Hello there"}])
        events: dict[str, list] = {"gone": [], "other": []}
        done = threading.Event()

        def gone_emit(ev):  # runs on the engine thread, between two steps
            events["gone"].append(ev)
            # At its second token: emitted by a decoding step (the first comes from the prefill,
            # which a decoding step follows in the same turn of the loop).
            if sum(isinstance(e, Delta) for e in events["gone"]) == 2 and not gone.cancelled.is_set():
                gone.cancelled.set()  # what chat.stream does when the client disconnects...
                eng.release("x@v1")  # ...and its lease goes back at once

        def other_emit(ev):
            events["other"].append(ev)
            if isinstance(ev, (Finished, Failed)):
                done.set()

        eng.acquire("x@v1")
        eng.unload_adapter("x@v1")  # a swap: x@v1 goes when its last request is done
        gone = GenJob(ids, 40, adapter="x@v1", emit=gone_emit)
        other = GenJob(ids, 12, adapter="x@v2", emit=other_emit)
        eng.submit(gone)
        eng.submit(other)
        assert done.wait(60)
        last = events["other"][-1]
        assert isinstance(last, Finished), last
        assert last.text == run(eng, [GenJob(ids, 12, adapter="x@v2")])[0].text
        assert isinstance(events["gone"][-1], Finished) and events["gone"][-1].finish_reason == "cancelled"
        assert "x@v1" not in eng.adapters
    finally:
        eng.close()


def test_a_request_with_unusable_settings_fails_alone(engine):
    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    events = {"bad": [], "good": []}
    done = threading.Event()
    bad = GenJob(ids, 4, temperature=0.7, seed=2**70, emit=events["bad"].append)  # torch refuses this seed

    def good_emit(ev):
        events["good"].append(ev)
        if isinstance(ev, (Finished, Failed)):
            done.set()

    engine.submit(bad)
    engine.submit(GenJob(ids, 4, emit=good_emit))
    assert done.wait(30)
    assert isinstance(events["good"][-1], Finished)
    assert isinstance(events["bad"][-1], Failed) and "bad request" in events["bad"][-1].message


def test_a_vanishing_temperature_decodes_greedily(engine):
    """A temperature of 1e-38 (found by the API fuzzer) made logits / temperature overflow and the
    request fail with a 500; below MIN_TEMPERATURE decoding is greedy, as it is in the limit."""
    ids = engine.encode_chat([{"role": "user", "content": "Pick a word"}])
    tiny = run(engine, [GenJob(ids, 8, temperature=1.175494351e-38, seed=1)])[0]
    greedy = run(engine, [GenJob(ids, 8)])[0]
    assert tiny.finish_reason in ("stop", "length") and tiny.text == greedy.text

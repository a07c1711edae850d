"""The offline generator: batched greedy answers with the chat template, for data synthesis,
evaluation, the local teacher outside the server, and the CLI.

`generate` works on an already-loaded model (base or PEFT) so callers that generate many times
load once; `chat_fn` wraps it as the one-conversation function the local teacher needs (answers
stop once their JSON object is closed); `generate_file` is the `refinery generate` command:
JSONL in, JSONL out. The server decodes with its own engine (service.serving.engines.embedded), which
batches requests as they arrive; everything else generates here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from adapters.files import read_jsonl, write_jsonl
from adapters.model import load_model
from policies.adapter_scope import FILE as SCOPE, AdapterScope
from policies.text import last_user_text

Messages = list[dict]


def to_messages(prompt: str | Messages | dict, system: str | None = None) -> Messages:
    """A prompt as an OpenAI-style message list, with `system` as the first message if given.

    Accepts a string (one user turn), a message list, or a JSONL row holding "messages" or
    "prompt". A given system message replaces one already present: the caller asked for it.
    """
    if isinstance(prompt, dict):
        if "messages" in prompt:
            prompt = prompt["messages"]
        elif "prompt" in prompt:
            prompt = prompt["prompt"]
        else:
            raise ValueError("a row needs a 'prompt' or a 'messages' field")
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise ValueError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")
    if system is not None:
        messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
    return messages


def render_prompt(tokenizer, messages: Messages) -> list[int]:
    """Token ids of the conversation followed by the assistant's turn header."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding here where 4.x returned a plain list.
    if hasattr(ids, "keys") and "input_ids" in ids:
        ids = ids["input_ids"]
    return list(ids)


class _JsonClosed:
    """Stops each row once its answer has opened and closed a JSON object: what a small model
    adds after it is rambling paid for in CPU time. Shape of the result: (batch,) bool."""

    def __init__(self, tokenizer, start: int, prefixes: Sequence[str]):
        self.tokenizer, self.start, self.prefixes = tokenizer, start, prefixes

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        done = []
        for row, prefix in zip(input_ids, self.prefixes):
            text = prefix + self.tokenizer.decode(row[self.start:], skip_special_tokens=True)
            done.append("{" in text and text.count("}") >= text.count("{"))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: list[Messages],
    max_new_tokens: int = 128,
    batch_size: int = 16,
    progress: bool = True,
    answer_prefixes: Sequence[str] | None = None,
    stop_at_json_end: bool = False,
    suppress_tokens: list[int] | None = None,
) -> list[str]:
    """Greedy answers, one per conversation, in input order.

    Prompts are sorted by length before batching so a batch pads little, then left-padded (a
    decoder continues from the last position, so padding must go before the prompt) with an
    attention mask. Greedy decoding makes the answer independent of the batch it fell into, up
    to float rounding.

    `answer_prefixes` (one per conversation) start each answer for the model and are part of
    what is returned; `stop_at_json_end` ends a row once its JSON object is closed;
    `suppress_tokens` are never generated.
    """
    if not conversations:
        return []
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prefixes = list(answer_prefixes) if answer_prefixes is not None else [""] * len(conversations)
    encoded = [render_prompt(tokenizer, m) + (tokenizer(p, add_special_tokens=False)["input_ids"] if p else [])
               for m, p in zip(conversations, prefixes)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    answers: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(encoded), desc="generate", unit="prompt", disable=not progress)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention[row, width - len(ids):] = 1
            stopping = StoppingCriteriaList([_JsonClosed(tokenizer, width, [prefixes[i] for i in idx])]) \
                if stop_at_json_end else None
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                # set explicitly: a model's generation_config may ask for sampling
                temperature=None, top_p=None, top_k=None,
                pad_token_id=pad_id,
                stopping_criteria=stopping,
                suppress_tokens=suppress_tokens,
            )
            for row, i in enumerate(idx):
                text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
                answers[i] = prefixes[i] + text if prefixes[i] else text.strip()
            bar.update(len(idx))
        bar.close()
    finally:
        model.train(was_training)
    return answers


def chat_fn(model, tokenizer, max_tokens: int = 96) -> Callable[[Messages, int], str]:
    """One conversation in, one greedy answer out (policies.teacher's GenerateFn), for the local
    teacher outside the server. Answers stop once a JSON object is closed, and at `max_tokens`."""

    def answer(messages: Messages, budget: int) -> str:
        return generate(model, tokenizer, [messages], max_new_tokens=min(budget or max_tokens, max_tokens),
                        batch_size=1, progress=False, stop_at_json_end=True)[0]

    return answer


def load_for_generation(model_spec: str | None, cache_dir: Path, adapter: Path | str | None = None,
                        device: str = "auto"):
    """(model, tokenizer) for the base model, with the LoRA adapter in `adapter` applied if given."""
    loaded = load_model(model_spec, Path(cache_dir), device)
    model = loaded.model
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
    return model, loaded.tokenizer


def generate_file(
    prompts_path: Path | str,
    out_path: Path | str,
    model_spec: str | None,
    cache_dir: Path | str,
    adapter: Path | str | None = None,
    system: str | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    everywhere: bool = False,
    encoder: str | None = None,
) -> int:
    """`refinery generate`: each input row plus "response", written to `out_path`. Returns the count.

    With an adapter whose directory has a scope.json (policies.adapter_scope), a prompt outside
    that scope is answered by the base weights, as the server answers it, and its row says
    "adapter_applied": false; `everywhere` puts the adapter on every prompt. `encoder`: the
    sentence encoder the scope is judged with (None: the embedded one)."""
    rows = read_jsonl(prompts_path)
    # Parse every row before loading the model: a bad row fails in a second, not after a load.
    conversations = []
    for n, row in enumerate(rows, 1):
        try:
            conversations.append(to_messages(row, system=system))
        except ValueError as e:
            raise ValueError(f"{prompts_path}: row {n}: {e}") from e
    model, tokenizer = load_for_generation(model_spec, Path(cache_dir), adapter)
    inside = [True] * len(conversations)
    if adapter is not None and not everywhere and (Path(adapter) / SCOPE).is_file():
        from policies.corpus import load_corpus
        from policies.encoder import load_encoder
        from policies.scope_model import ScopeModels

        scope_file = AdapterScope.read(adapter)
        enc = load_encoder(encoder, cache_dir)
        scope = scope_file.compile(enc.embed_one, ScopeModels(enc, load_corpus(enc)).score if scope_file.domains else None)
        inside = [scope.covers(last_user_text(c)) for c in conversations]
    answers: list[str] = [""] * len(conversations)
    for applied in (True, False):
        idx = [i for i, ok in enumerate(inside) if ok == applied]
        if not idx:
            continue
        with model.disable_adapter() if not applied else contextlib.nullcontext():
            out = generate(model, tokenizer, [conversations[i] for i in idx], max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
        for i, a in zip(idx, out):
            answers[i] = a
    extra = (lambda ok: {"adapter_applied": ok}) if adapter is not None else (lambda ok: {})
    write_jsonl(out_path, ({**row, "response": a, **extra(ok)} for row, a, ok in zip(rows, answers, inside)))
    return len(rows)

"""Follow-up likelihood (FLR): an implicit satisfaction score for an answer, with no labels.

After an answer, ask the served model how likely a user would be to say something pleased
("Perfect, that's what I needed") rather than something displeased ("That's not what I
asked"). Each follow-up is scored as the SUM of the log-probabilities of its tokens given the
conversation (chat template applied), so a whole sentence is judged, not one token. The score
of an answer is

    FLR = mean(score of positive follow-ups) - mean(score of negative follow-ups)

Higher is better. The absolute value depends on the model and on the template set (longer
templates have lower sums); compare FLRs from the same model and templates only.

Cost: all the templates of one answer share its context. The conversation runs once (its KV
cache kept) and the short follow-ups run on top of it, so an answer costs about one forward
pass over the conversation plus one over 16 short rows, instead of 16 full passes.
"""

from __future__ import annotations

from typing import Sequence

import torch

# Each template names what it probes, so the set can be read (and extended) by aspect.
# Positives and negatives are paired by aspect so that no aspect weighs more on one side.
POSITIVE_FOLLOWUPS: tuple[tuple[str, str], ...] = (
    ("understanding", "Great, that makes sense now, thanks."),
    ("understanding", "Got it, that's clear."),
    ("correctness", "Yes, that's correct. Thank you!"),
    ("correctness", "That's right, thanks."),
    ("relevance", "Perfect, that answers my question."),
    ("relevance", "Thanks, that's exactly what I needed."),
    ("instruction", "Thanks, that's just what I asked for."),
    ("instruction", "Great, you followed my instructions perfectly."),
)

NEGATIVE_FOLLOWUPS: tuple[tuple[str, str], ...] = (
    ("understanding", "I don't understand, that makes no sense."),
    ("understanding", "That's confusing."),
    ("correctness", "No, that's wrong."),
    ("correctness", "That's not correct."),
    ("relevance", "That doesn't answer my question."),
    ("relevance", "That's not what I asked."),
    ("instruction", "You didn't do what I asked for."),
    ("instruction", "You ignored my instructions."),
)


def _encode(tokenizer, conversation: Sequence[dict], followup: str, max_context: int) -> tuple[list[int], list[int]]:
    """Tokens of the conversation plus the user follow-up, split into (context, scored part).

    The chat template is rendered twice (without and with the follow-up) and the difference is
    the follow-up turn. Its role header goes to the context: it is the same for every template
    (its log-prob would cancel out in the difference anyway), so all the templates of one
    answer share one context. The scored part is the follow-up text and its end-of-turn marker.
    """
    before = tokenizer.apply_chat_template(list(conversation), tokenize=False)
    after = tokenizer.apply_chat_template(list(conversation) + [{"role": "user", "content": followup}], tokenize=False)
    if not after.startswith(before):
        raise ValueError("the chat template does not render a conversation as a prefix of its continuation")
    turn = after[len(before):]
    at = turn.find(followup)
    if at < 0:
        raise ValueError("the chat template does not keep the follow-up text verbatim")
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    context = enc(before) + enc(turn[:at])
    scored = enc(turn[at:])
    # Keep the most recent context: long conversations are cut from the left (the answer and
    # the question it answers are at the end, and they are what the follow-up reacts to).
    if len(context) > max_context:
        context = context[-max_context:]
    return context, scored


def _score_group(model, contexts: list[list[int]], followups: list[list[int]], pad_id: int, device) -> list[list[float]]:
    """Summed log-probs of every follow-up after every context, each context run once.

    Pass 1 runs the contexts left-padded (each ends at the last column, so the logit that
    predicts a follow-up's first token is the last one) and keeps the KV cache. Pass 2 repeats
    that cache once per follow-up and runs the follow-ups right-padded on top of it.
    Shape of the result: (len(contexts), len(followups)).
    """
    n_ctx, n_fol = len(contexts), len(followups)
    width = max(len(c) for c in contexts)
    ctx_ids = torch.full((n_ctx, width), pad_id, dtype=torch.long)
    ctx_mask = torch.zeros((n_ctx, width), dtype=torch.long)
    for i, c in enumerate(contexts):
        ctx_ids[i, width - len(c):] = torch.tensor(c)
        ctx_mask[i, width - len(c):] = 1
    # Positions count real tokens only: a padded row must see its text at the same rotary
    # positions as when it runs alone, or batching would change the scores.
    ctx_pos = (ctx_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ctx_ids.to(device), attention_mask=ctx_mask.to(device),
                position_ids=ctx_pos.to(device), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # Shape: (n_ctx, vocab)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n_fol)  # row i * n_fol + f = context i, follow-up f

    fwidth = max(len(f) for f in followups)
    fol_ids = torch.full((n_fol, fwidth), pad_id, dtype=torch.long)
    fol_mask = torch.zeros((n_fol, fwidth), dtype=torch.long)
    for f, toks in enumerate(followups):
        fol_ids[f, :len(toks)] = torch.tensor(toks)
        fol_mask[f, :len(toks)] = 1
    ids = fol_ids.repeat(n_ctx, 1).to(device)  # Shape: (n_ctx * n_fol, fwidth)
    fmask = fol_mask.repeat(n_ctx, 1).to(device)
    mask = torch.cat([ctx_mask.to(device).repeat_interleave(n_fol, dim=0), fmask], dim=1)
    start = ctx_mask.sum(-1).to(device).repeat_interleave(n_fol)  # real context length per row
    pos = start.unsqueeze(1) + torch.arange(fwidth, device=device).unsqueeze(0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                   past_key_values=cache, use_cache=True).logits  # Shape: (rows, fwidth, vocab)
    # The logit at follow-up position t predicts token t + 1; token 0 was predicted in pass 1.
    # log p = logit - logsumexp: avoids materialising a second (rows, fwidth, vocab) tensor.
    logits = logits[:, :-1, :].float()
    tail = logits.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    head = first.repeat_interleave(n_fol, dim=0).gather(-1, ids[:, :1]).squeeze(-1)
    sums = head + (tail * fmask[:, 1:]).sum(-1)  # Shape: (rows,)
    return sums.view(n_ctx, n_fol).tolist()


@torch.no_grad()
def followup_logprobs(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    followups: Sequence[str],
    batch_size: int = 64,
    max_context: int = 1024,
) -> list[list[float]]:
    """Summed log-prob of every follow-up (a user turn) after every conversation.

    `batch_size` is the number of (conversation, follow-up) rows per forward pass: conversations
    go `max(1, batch_size // len(followups))` at a time. Shape of the result:
    (len(conversations), len(followups)).
    """
    if not followups:
        raise ValueError("no follow-ups to score")
    encoded: list[tuple[list[int], list[list[int]]]] = []
    for conv in conversations:
        pairs = [_encode(tokenizer, conv, text, max_context) for text in followups]
        if any(ctx != pairs[0][0] for ctx, _ in pairs):
            raise ValueError("the chat template renders the follow-up turn's header differently per text")
        encoded.append((pairs[0][0], [fol for _, fol in pairs]))
    # Similar lengths in a group waste less compute on padding; results go back in input order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    per_group = max(1, batch_size // len(followups))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    result: list[list[float]] = [[] for _ in conversations]
    for at in range(0, len(order), per_group):
        group = order[at:at + per_group]
        # A follow-up tokenizes the same after any conversation (its header is in the context).
        sums = _score_group(model, [encoded[i][0] for i in group], encoded[group[0]][1], pad_id, device)
        for i, row in zip(group, sums):
            result[i] = row
    return result


def flr_scores(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    batch_size: int = 64,
    max_context: int = 1024,
    positive: Sequence[str] | None = None,
    negative: Sequence[str] | None = None,
) -> list[float]:
    """FLR of each conversation's final assistant answer; higher = the model expects a happier
    user. Shape: (len(conversations),).

    Each conversation is an OpenAI-style message list ending with the assistant answer to
    judge. `positive` / `negative` replace the default template sets. Runs under no_grad.
    """
    for conv in conversations:
        if not conv or conv[-1].get("role") != "assistant":
            raise ValueError("each conversation must end with the assistant answer to score")
    if not conversations:
        return []
    pos = list(positive) if positive is not None else [t for _, t in POSITIVE_FOLLOWUPS]
    neg = list(negative) if negative is not None else [t for _, t in NEGATIVE_FOLLOWUPS]
    if not pos or not neg:
        raise ValueError("FLR needs at least one positive and one negative follow-up")
    sums = followup_logprobs(model, tokenizer, conversations, pos + neg, batch_size, max_context)
    return [sum(s[:len(pos)]) / len(pos) - sum(s[len(pos):]) / len(neg) for s in sums]

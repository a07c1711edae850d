"""Follow-up likelihood (FLR): an implicit satisfaction score for an answer, with no labels.

After an answer, ask the served model how likely a user would be to say something pleased
("Perfect, that's what I needed") rather than something displeased ("That's not what I
asked"). Each follow-up is scored as the SUM of the log-probabilities of its tokens given the
conversation (chat template applied), so a whole sentence is judged, not one token. The score
of an answer is

    FLR = mean(score of positive follow-ups) - mean(score of negative follow-ups)

Higher is better. The absolute value depends on the model and on the template set (longer
templates have lower sums); compare FLRs from the same model and templates only.

Cost: the 16 templates of one answer share its context. Each answer is ONE packed row,
`[left padding | conversation | follow-up 1 | follow-up 2 | ...]`, with a 4D attention mask
that lets each follow-up see the conversation and itself only, and position ids that restart
every follow-up where the conversation ends. So an answer costs one forward pass over the
conversation plus ~200 follow-up tokens, instead of 16 passes over the conversation, and no
KV cache is copied 16 times. Vocabulary logits (49k wide) are only computed for the scored
positions, a few rows at a time, so memory stays small at any batch size.
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


def default_followups() -> tuple[list[str], list[str]]:
    """The positive and the negative follow-up texts FLR scores by default."""
    return [t for _, t in POSITIVE_FOLLOWUPS], [t for _, t in NEGATIVE_FOLLOWUPS]


def followup_tokens(tokenizer, conversation: Sequence[dict], followups: Sequence[str],
                    max_context: int = 768) -> tuple[list[int], list[list[int]]]:
    """(context, scored tokens of each follow-up): what an engine that reports prompt
    log-probs (vLLM) is asked to score, as `context + scored[k]` per follow-up."""
    pairs = [_encode(tokenizer, conversation, text, max_context) for text in followups]
    return pairs[0][0], [fol for _, fol in pairs]


def flr_from_sums(sums: Sequence[float], n_positive: int) -> float:
    """FLR from the summed log-probs of the positive follow-ups, then the negative ones."""
    pos, neg = sums[:n_positive], sums[n_positive:]
    return sum(pos) / len(pos) - sum(neg) / len(neg)


def _packed_inputs(contexts: list[list[int]], followups: list[list[int]], pad_id: int, dtype: torch.dtype):
    """Packed rows for `_score_packed`: ids, positions and a 4D additive attention mask.

    Shapes: ids (n, W), positions (n, W), mask (n, 1, W, W), with W = longest context + all
    follow-up tokens. Contexts are left-padded so the follow-up block is at the same columns in
    every row.
    """
    n, width_ctx = len(contexts), max(len(c) for c in contexts)
    block = [t for f in followups for t in f]
    width = width_ctx + len(block)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    real = torch.zeros((n, width), dtype=torch.bool)
    positions = torch.zeros((n, width), dtype=torch.long)
    # segment id per column: -1 padding, 0 conversation, k + 1 follow-up k (same in every row)
    seg_block = torch.cat([torch.full((len(f),), k + 1) for k, f in enumerate(followups)])
    offset_block = torch.cat([torch.arange(len(f)) for f in followups])
    segment = torch.full((n, width), -1, dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, width_ctx - len(c):width_ctx] = torch.tensor(c)
        real[i, width_ctx - len(c):] = True
        positions[i, width_ctx - len(c):width_ctx] = torch.arange(len(c))
        # Every follow-up starts right after the conversation, as if it were the only one.
        positions[i, width_ctx:] = len(c) + offset_block
        segment[i, width_ctx - len(c):width_ctx] = 0
        segment[i, width_ctx:] = seg_block
    ids[:, width_ctx:] = torch.tensor(block)
    q, k = segment.unsqueeze(2), segment.unsqueeze(1)  # (n, W, 1), (n, 1, W)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    allowed = causal & real.unsqueeze(1) & ((k == 0) | (k == q))
    # A padding column attends to itself only: a query row with nothing to attend to would
    # give NaNs (its output is never used).
    allowed |= torch.eye(width, dtype=torch.bool)
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    return ids, positions, mask, width_ctx


def _score_packed(model, contexts: list[list[int]], followups: list[list[int]], pad_id: int) -> list[list[float]]:
    """Summed log-probs of every follow-up after every context, one packed row per context.
    Shape of the result: (len(contexts), len(followups)).
    """
    param = next(model.parameters())
    ids, positions, mask, width_ctx = _packed_inputs(contexts, followups, pad_id, param.dtype)
    ids, positions, mask = ids.to(param.device), positions.to(param.device), mask.to(param.device)
    # Which column predicts each scored token: a follow-up's first token is predicted by the
    # conversation's last column (shared by all follow-ups), the others by the column before.
    predictor, col = [], width_ctx
    for f in followups:
        predictor += [width_ctx - 1] + list(range(col, col + len(f) - 1))
        col += len(f)
    predictor_t = torch.tensor(predictor, device=param.device)
    targets = ids[:, width_ctx:]  # Shape: (n, n_block)
    seg_of = torch.tensor([k for k, f in enumerate(followups) for _ in f], device=param.device)

    head = model.get_output_embeddings()
    plain_head = isinstance(head, torch.nn.Linear) and not (
        getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None))
    if plain_head:
        # Run the transformer body once, then the 49k-wide head on a few rows at a time.
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        hidden = hidden[:, predictor_t, :]  # Shape: (n, n_block, hidden)
        token_logps = []
        for r in range(hidden.shape[0]):
            logits = head(hidden[r]).float()  # Shape: (n_block, vocab)
            token_logps.append(logits.gather(-1, targets[r].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1))
        token_logps = torch.stack(token_logps)
    else:
        # Heads with soft-capping or scaling: let the model compute its own logits (more memory).
        keep = ids.shape[1] - (width_ctx - 1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits.float()
        logits = logits[:, predictor_t - (width_ctx - 1), :]
        token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    sums = torch.zeros((ids.shape[0], len(followups)), dtype=torch.float32, device=param.device)
    sums.index_add_(1, seg_of, token_logps.float())
    return sums.tolist()


@torch.no_grad()
def followup_logprobs(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    followups: Sequence[str],
    batch_size: int = 16,
    max_context: int = 768,
) -> list[list[float]]:
    """Summed log-prob of every follow-up (a user turn) after every conversation.

    `batch_size` conversations go through the model together (each one packed row holding all
    the follow-ups). Shape of the result: (len(conversations), len(followups)).
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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result: list[list[float]] = [[] for _ in conversations]
    for at in range(0, len(order), batch_size):
        group = order[at:at + batch_size]
        # A follow-up tokenizes the same after any conversation (its header is in the context).
        sums = _score_packed(model, [encoded[i][0] for i in group], encoded[group[0]][1], pad_id)
        for i, row in zip(group, sums):
            result[i] = row
    return result


def flr_scores(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    batch_size: int = 16,
    max_context: int = 768,
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
    return [flr_from_sums(s, len(pos)) for s in sums]

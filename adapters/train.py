"""Constrained preference training (C3PO): a LoRA adapter from preference pairs and constraints.

Loss per step = mean DPO loss over the step's preference pairs
              + sft_weight x mean per-token NLL of their chosen answers (RPO)
              + mean over the step's constraint rows of weight x NLL of the completion
              + kto_weight x mean KTO loss over the step's unpaired answers (thumbs up or down
                without a pair; adapters.losses.kto_loss).
DPO teaches the rule where it applies (chosen = revised answer, rejected = the old one); the
NLL on the chosen answers keeps DPO from lowering both answers' likelihood, the usual way a
small preference set breaks a model; the constraint term pins the adapter to the model's own
old answers on prompts outside the rule's domain, which is what keeps a learned rule from
showing up everywhere (C3PO, "RLVF: Learning from Verbal Feedback without Overgeneralization",
2024). The guard (adapters.guard) measures drift on held-out general prompts and degeneration
during the run and stops one that goes wrong before anything is written.

Mixing: each step takes `pairs_per_step` pairs and an equal share of the constraint rows,
ceil(constraints / steps per epoch), walked through a fresh shuffle each epoch. Every step
therefore sees both terms (the pull towards the rule and the anchor against spreading it are
balanced step by step, not epoch by epoch) and every constraint row is seen at least once per
epoch. With 20 pairs and 40 constraint rows that is one pair and two constraint rows a step.

The reference model of DPO is the base model itself: the same weights with the LoRA adapter
disabled. It never changes, so its log-probs are computed once before the first step.

`train()` reads top to bottom: data -> model -> reference log-probs -> guard -> loop -> save.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from adapters.files import read_jsonl
from adapters.generate import render_prompt, to_messages
from adapters.guard import Guard, TrainingStopped
from adapters.losses import combined_loss, constraint_nll, dpo_loss, kto_loss, sequence_logps, sequence_mean_nll
from adapters.model import load_model
from adapters.train_config import TrainConfig


BUDGET_MARGIN = 3  # an answer within this many tokens of its generation budget may have been cut there


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    seconds: float  # the optimisation loop only, without model loading and saving
    pairs_per_second: float  # preference pairs processed (epochs x pairs) per loop second
    final_loss: float  # mean over the last epoch's steps: one step's loss is too noisy
    final_dpo: float
    final_nll: float
    final_accuracy: float
    guard: list[dict] | None = None  # every drift / degeneration check (adapters.guard)


# ---------------------------------------------------------------------------------------------
# Data: JSONL rows -> validated rows -> token ids with a loss mask


def answer_text(answer) -> str:
    """An answer as text: a string, or TRL's conversational [{"role": "assistant", "content": ...}]."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, dict):
        answer = [answer]
    if (isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict)
            and answer[0].get("role") == "assistant" and isinstance(answer[0].get("content"), str)):
        return answer[0]["content"]
    raise ValueError("an answer must be a string or one assistant message")


def parse_preferences(rows: list[dict]) -> list[dict]:
    """Rows {"prompt", "chosen", "rejected"} -> {"messages", "chosen", "rejected"} (all text)."""
    out = []
    for n, row in enumerate(rows, 1):
        try:
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            out.append({"messages": to_messages(row["prompt"]), "chosen": answer_text(row["chosen"]),
                        "rejected": answer_text(row["rejected"])})
        except ValueError as e:
            raise ValueError(f"preference row {n}: {e}") from e
    if not out:
        raise ValueError("no preference pairs")
    return out


def parse_constraints(rows: list[dict], default_weight: float) -> list[dict]:
    """Rows {"prompt", "completion", "weight"?, "max_tokens"?} -> {"messages", "completion", "weight",
    "max_tokens"} ("max_tokens": the budget the completion was generated under, if known)."""
    out = []
    for n, row in enumerate(rows, 1):
        try:
            missing = [k for k in ("prompt", "completion") if k not in row]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            weight = float(row.get("weight", default_weight))
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight must be a finite number >= 0, got {row.get('weight')!r}")
            budget = row.get("max_tokens")
            if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
                raise ValueError(f"max_tokens must be a positive integer, got {budget!r}")
            out.append({"messages": to_messages(row["prompt"]), "completion": answer_text(row["completion"]),
                        "weight": weight, "max_tokens": budget})
        except ValueError as e:
            raise ValueError(f"constraint row {n}: {e}") from e
    return out


def parse_unpaired(rows: list[dict]) -> list[dict]:
    """Rows {"prompt", "completion", "label"} (TRL's unpaired format; label true = desirable) ->
    {"messages", "completion", "label"}."""
    out = []
    for n, row in enumerate(rows, 1):
        try:
            missing = [k for k in ("prompt", "completion", "label") if k not in row]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            if not isinstance(row["label"], bool):
                raise ValueError(f"label must be true or false, got {row['label']!r}")
            out.append({"messages": to_messages(row["prompt"]), "completion": answer_text(row["completion"]),
                        "label": row["label"]})
        except ValueError as e:
            raise ValueError(f"unpaired row {n}: {e}") from e
    return out


def tokenize_example(tokenizer, messages, answer: str, cfg: TrainConfig,
                     budget: int | None = None) -> tuple[list[int], list[int]]:
    """(input ids, loss mask) of prompt + answer + end-of-turn; the mask is 1 on answer tokens.

    The prompt is rendered by the chat template with the assistant header, exactly as at
    generation time; the answer is tokenised on its own and closed with the EOS token (for
    chat-tuned models such as SmolLM2 that is the end-of-turn token <|im_end|>), so the model
    learns to stop where the answer stops. `budget`: the token budget the answer was generated
    under (a row's "max_tokens"); an answer that came near it may have been cut there, and is
    not closed: an end-of-turn at a cut would teach the model to stop mid-sentence, while an
    answer left open teaches nothing about what follows its last token. Near means within
    BUDGET_MARGIN tokens: the text comes back stripped and re-tokenised, so a cut answer may
    count a token or two fewer than it was generated with, and a finished one as many.
    """
    prompt = render_prompt(tokenizer, messages)[-cfg.max_prompt_length:]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if budget is None or len(answer_ids) < budget - BUDGET_MARGIN:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: cfg.max_length - len(prompt)]
    return prompt + answer_ids, [0] * len(prompt) + [1] * len(answer_ids)


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example. Shapes: every tensor (batch, longest)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, (ids, mask) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, : len(ids)] = torch.tensor(mask, dtype=torch.float32)
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "loss_mask": loss_mask.to(device)}


def forward_logits(model, batch) -> torch.Tensor:
    """Shape: (batch, seq, vocab)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def step_plan(n_pairs: int, n_constraints: int, cfg: TrainConfig, rng: random.Random,
              n_unpaired: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
    """For every step of the run: (indices of its pairs, of its constraint rows, of its unpaired
    answers). Without pairs, the unpaired answers set the pace, `pairs_per_step` of them a step."""
    steps_per_epoch = math.ceil((n_pairs or n_unpaired) / cfg.pairs_per_step)
    share = lambda n: math.ceil(n / steps_per_epoch) if n else 0  # noqa: E731
    per_step, per_step_u = share(n_constraints), share(n_unpaired)
    plan = []
    for _ in range(cfg.epochs):
        pairs = list(range(n_pairs))
        rng.shuffle(pairs)
        cons = list(range(n_constraints))
        rng.shuffle(cons)
        unp = list(range(n_unpaired))
        rng.shuffle(unp)
        for s in range(steps_per_epoch):
            p = pairs[s * cfg.pairs_per_step:(s + 1) * cfg.pairs_per_step]
            # wrap around the shuffled list: the last steps reuse a few rows rather than go without
            c = [cons[(s * per_step + j) % n_constraints] for j in range(per_step)]
            u = [unp[(s * per_step_u + j) % n_unpaired] for j in range(per_step_u)]
            plan.append((p, c, u))
    return plan


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def init_lora(base_model, cfg: TrainConfig):
    """The base model wrapped with a fresh LoRA adapter; the base weights frozen.

    Seeded here, right before the random A matrices are drawn, so the initial adapter depends
    on the seed alone and not on whatever consumed random numbers before (model loading does).
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    # peft keeps the adapter weights in float32 under a bf16 base, so small updates are not lost.
    return get_peft_model(base_model, lora)


# ---------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig, preferences: list[dict], constraints: list[dict], out_dir: Path | str,
          cache_dir: Path | str, progress: bool = True, unpaired: list[dict] = ()) -> TrainResult:
    """Train a LoRA adapter and write it to `out_dir` with training_config.json and the loss curve.

    `preferences`, `constraints` and `unpaired` are JSONL rows as `refinery train` reads them; an
    empty `constraints` list gives DPO without anchors. Either pairs or unpaired answers are needed.
    """
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    # 1. Data: validate every row before the model is loaded, so a typo fails in a second.
    unp = parse_unpaired(list(unpaired))
    pairs = parse_preferences(preferences) if preferences or not unp else []
    cons = parse_constraints(constraints, cfg.constraint_weight)

    # 2. Model: the base, frozen, with a fresh LoRA adapter on every linear layer of the blocks.
    loaded = load_model(cfg.model, Path(cache_dir), cfg.device)
    tok, device = loaded.tokenizer, loaded.device
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = init_lora(loaded.model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]

    chosen = [tokenize_example(tok, p["messages"], p["chosen"], cfg) for p in pairs]
    rejected = [tokenize_example(tok, p["messages"], p["rejected"], cfg) for p in pairs]
    cons_ex = [tokenize_example(tok, c["messages"], c["completion"], cfg, c["max_tokens"]) for c in cons]
    cons_w = torch.tensor([c["weight"] for c in cons], dtype=torch.float32, device=device)
    unp_ex = [tokenize_example(tok, u["messages"], u["completion"], cfg) for u in unp]
    unp_label = torch.tensor([u["label"] for u in unp], dtype=torch.bool, device=device)

    # 3. Reference log-probs: the base model is the adapter switched off; it never changes, so
    #    one pass now replaces a second forward pass at every step (and a second model copy).
    model.eval()
    ref_chosen = torch.empty(len(pairs), device=device)
    ref_rejected = torch.empty(len(pairs), device=device)
    with torch.no_grad(), model.disable_adapter():
        for i in range(len(pairs)):
            batch = collate([chosen[i], rejected[i]], pad_id, device)
            logps = sequence_logps(forward_logits(model, batch), batch["input_ids"], batch["loss_mask"])
            ref_chosen[i], ref_rejected[i] = logps[0], logps[1]
        ref_unpaired = torch.tensor([sequence_logps(forward_logits(model, b), b["input_ids"], b["loss_mask"])[0].item()
                                     for b in (collate([ex], pad_id, device) for ex in unp_ex)],
                                    dtype=torch.float32, device=device)

    # 4. The guard: the base model's answers to held-out general prompts, to measure drift on.
    guard = None
    if cfg.guard_every:
        guard = Guard.build(model, tok, device, [last_user(p["messages"]) for p in pairs], [p["chosen"] for p in pairs], cfg)

    # 5. The loop: one forward pass per step over [chosen..., rejected..., constraint rows...].
    plan = step_plan(len(pairs), len(cons), cfg, rng, n_unpaired=len(unp))
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    curve = {k: [] for k in ("loss", "dpo", "sft", "nll", "kto", "margin", "accuracy", "chosen_reward",
                             "rejected_reward", "lr", "elapsed")}
    model.train()
    start = time.perf_counter()
    bar = tqdm(plan, desc="train", unit="step", disable=not progress)
    for step, (pair_idx, cons_idx, unp_idx) in enumerate(bar):
        lr = cfg.lr * lr_factor(step, len(plan), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        n, k = len(pair_idx), len(cons_idx)
        batch = collate([chosen[i] for i in pair_idx] + [rejected[i] for i in pair_idx]
                        + [cons_ex[i] for i in cons_idx] + [unp_ex[i] for i in unp_idx], pad_id, device)
        logits = forward_logits(model, batch)
        ids, mask = batch["input_ids"], batch["loss_mask"]

        policy = sequence_logps(logits[: 2 * n], ids[: 2 * n], mask[: 2 * n])
        dpo = dpo_loss(policy[:n], policy[n:], ref_chosen[pair_idx], ref_rejected[pair_idx], cfg.beta)
        zero = logits.new_zeros(())
        sft = sequence_mean_nll(logits[:n], ids[:n], mask[:n]).mean() if n else zero
        end = 2 * n + k
        nll = constraint_nll(logits[2 * n:end], ids[2 * n:end], mask[2 * n:end], cons_w[cons_idx],
                             cfg.constraint_reduction) if cons_idx else 0.0
        kto = zero
        if unp_idx:
            kto = kto_loss(sequence_logps(logits[end:], ids[end:], mask[end:]), ref_unpaired[unp_idx],
                           unp_label[unp_idx], cfg.beta, cfg.kto_desirable_weight, cfg.kto_undesirable_weight).mean()
        loss = (combined_loss(dpo.loss, nll) if n else zero + nll) + cfg.sft_weight * sft + cfg.kto_weight * kto

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()

        record = {"loss": loss.item(), "dpo": dpo.loss.mean().item() if n else 0.0, "sft": sft.item(), "kto": kto.item(),
                  "nll": nll.item() if torch.is_tensor(nll) else nll,
                  "margin": dpo.margins.mean().item() if n else 0.0, "accuracy": dpo.accuracies.mean().item() if n else 0.0,
                  "chosen_reward": dpo.chosen_rewards.mean().item() if n else 0.0,
                  "rejected_reward": dpo.rejected_rewards.mean().item() if n else 0.0, "lr": lr,
                  "elapsed": time.perf_counter() - start}
        for k, v in record.items():
            curve[k].append(v)
        bar.set_postfix(loss=f"{record['loss']:.3f}", margin=f"{record['margin']:.2f}", nll=f"{record['nll']:.3f}")
        if guard is not None and ((step + 1) % cfg.guard_every == 0 or step + 1 == len(plan)):
            try:
                check = guard.check(model, step + 1, last=step + 1 == len(plan))
            except TrainingStopped as stop:
                bar.close()
                write_stopped(out_dir, cfg, curve, guard.history, str(stop))
                raise
            if "drift" in check:
                bar.set_postfix(loss=f"{record['loss']:.3f}", margin=f"{record['margin']:.2f}", drift=f"{check['drift']:.2f}")
    bar.close()
    seconds = time.perf_counter() - start

    # 6. Save: the PEFT adapter (safetensors only), its config, and the loss curve.
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    (out_dir / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    last = len(plan) // cfg.epochs  # steps in the last epoch
    tail = {k: sum(v[-last:]) / last for k, v in curve.items() if k != "elapsed"}
    result = TrainResult(out_dir=out_dir, steps=len(plan), seconds=seconds,
                         pairs_per_second=len(pairs) * cfg.epochs / seconds if seconds else float("inf"),
                         final_loss=tail["loss"], final_dpo=tail["dpo"], final_nll=tail["nll"],
                         final_accuracy=tail["accuracy"], guard=guard.history if guard else None)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary.update(base_model=loaded.model_id, device=str(device), dtype=str(loaded.dtype),
                   pairs=len(pairs), constraint_rows=len(cons), unpaired=len(unp),
                   constraint_rows_per_step=len(plan[0][1]) if plan else 0)
    legend = {"loss": "total loss of the step", "dpo": "mean DPO loss of its pairs",
              "sft": "mean NLL per token of its chosen answers (weighted by sft_weight in the loss)",
              "kto": "mean KTO loss of its unpaired answers (weighted by kto_weight)",
              "nll": "weighted constraint NLL term (0 for plain DPO)", "margin": "mean reward margin, chosen - rejected",
              "accuracy": "share of pairs with a positive margin", "lr": "learning rate used",
              "elapsed": "seconds since the first step, at the end of this one"}
    (out_dir / "loss_curve.json").write_text(
        json.dumps({"summary": summary, "legend": legend, "steps": curve, "guard": result.guard}, indent=1) + "\n")
    plot_curve(curve, out_dir / "loss_curve.png", steps_per_epoch=last)
    return result


def last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user" and isinstance(m.get("content"), str)), "")


def write_stopped(out_dir: Path, cfg: TrainConfig, curve: dict, checks: list[dict], message: str) -> None:
    """What a stopped run leaves: its reason, curve and checks in training_stopped.json, no adapter."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training_stopped.json").write_text(json.dumps(
        {"message": message, "config": asdict(cfg), "guard": checks, "steps": curve}, indent=1) + "\n")


def plot_curve(curve: dict[str, list[float]], path: Path, steps_per_epoch: int | None = None) -> None:
    """Loss terms on the left, reward margin and accuracy on the right; one PNG."""
    # The object API with the Agg canvas draws without touching pyplot's global backend,
    # which a server or a notebook in the same process may have chosen.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = list(range(1, len(curve["loss"]) + 1))
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(steps, curve["loss"], label="total")
    left.plot(steps, curve["dpo"], label="DPO")
    if any(curve.get("sft", [])):
        left.plot(steps, curve["sft"], label="chosen NLL / token")
    if any(curve["nll"]):
        left.plot(steps, curve["nll"], label="weighted NLL")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    right.plot(steps, curve["margin"], label="reward margin", color="tab:purple")
    right.set_xlabel("step")
    right.set_ylabel("reward margin (chosen - rejected)")
    acc = right.twinx()
    window = steps_per_epoch or 1
    running = [sum(curve["accuracy"][max(0, i - window + 1): i + 1]) / min(window, i + 1) for i in range(len(steps))]
    acc.plot(steps, running, label="accuracy (running, 1 epoch)", color="tab:red", alpha=0.6)
    acc.set_ylim(-0.05, 1.05)
    acc.set_ylabel("accuracy")
    right.legend(right.get_lines() + acc.get_lines(), ["reward margin", "accuracy (running, 1 epoch)"], loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if steps_per_epoch:
        for ax in (left, right):
            for x in range(steps_per_epoch, len(steps), steps_per_epoch):
                ax.axvline(x + 0.5, color="grey", linestyle=":", linewidth=0.8)
    fig.suptitle("DPO + constraint NLL" if any(curve["nll"]) else "DPO")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def train_files(cfg: TrainConfig, preferences_path: Path | str | None, constraint_path: Path | str | None,
                out_dir: Path | str, cache_dir: Path | str, progress: bool = True,
                unpaired_path: Path | str | None = None) -> TrainResult:
    """`refinery train`: read the JSONL files and train."""
    prefs = read_jsonl(preferences_path) if preferences_path else []
    cons = read_jsonl(constraint_path) if constraint_path else []
    unp = read_jsonl(unpaired_path) if unpaired_path else []
    return train(cfg, prefs, cons, out_dir, cache_dir, progress=progress, unpaired=unp)

"""Passkey retrieval (the paper's v4 Table 4): a random number hidden in filler text, then a question.

Each prompt is, in tokens of the model's own tokenizer (results/<run>/data/tokenizer):

    <s> INTRO  filler ... NEEDLE(key) ... filler  QUESTION | ANSWER(key)

with whole filler sentences added until the prompt (answer included) reaches the target length, and
the needle inserted after a fraction `depth` of them (depth drawn uniformly in [0, 1] per trial).
The pieces are tokenized separately (each starts with a space), so the answer's tokens are exactly
the tokenization of " <key>" that a greedy decoder would have to produce.

Scoring: greedy exact match by teacher forcing. One forward pass over prompt + answer; a trial is
correct when the argmax at every answer position is the answer token, which is exactly when greedy
decoding would generate the key (the first wrong token ends greedy's chance). No generate() and no
KV cache. The summed log-probability of the key's tokens is recorded too.
Lengths at and beyond the training context (train.seq_len) are marked in the JSON.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from .atomic import write_json_atomic

INTRO = "A pass key is hidden in the text below. Find it and remember it."
FILLER = (
    " The river runs past the old mill.",
    " The hills are quiet in the evening.",
    " A cart goes slowly down the road.",
    " Birds fly over the open field.",
    " Then everyone walks back home again.",
)
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"

DEFAULTS = {"lengths": [64, 128, 256, 512], "trials": 20, "key_digits": 5, "batch_size": 8, "dtype": "float32"}


class PasskeyPrompt:
    """Token ids of one trial and where the key sits."""

    def __init__(self, ids: list[int], answer_start: int, needle_start: int, key: str, depth: float, target_length: int):
        self.ids = ids                    # BOS + prompt + answer
        self.answer_start = answer_start  # index of the answer's first token in ids
        self.needle_start = needle_start  # index of the needle's first token in ids
        self.key = key
        self.depth = depth                # requested fraction of the filler before the needle
        self.target_length = target_length

    @property
    def prompt_ids(self) -> list[int]:
        return self.ids[: self.answer_start]

    @property
    def answer_ids(self) -> list[int]:
        return self.ids[self.answer_start:]

    @property
    def actual_depth(self) -> float:
        """Needle start as a fraction of the prompt's tokens (answer excluded): 0 = right after BOS + intro."""
        return self.needle_start / max(self.answer_start, 1)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_prompt(tokenizer, target_length: int, key: str, depth: float) -> PasskeyPrompt:
    """A prompt of at most `target_length` tokens (answer included), the needle after `depth` of the filler."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must lie in [0, 1], got {depth}")
    bos = tokenizer.bos_token_id
    head = ([bos] if bos is not None else []) + _encode(tokenizer, INTRO)
    needle = _encode(tokenizer, NEEDLE.format(key=key))
    tail = _encode(tokenizer, QUESTION)
    answer = _encode(tokenizer, ANSWER.format(key=key))
    fixed = len(head) + len(needle) + len(tail) + len(answer)
    if fixed > target_length:
        raise ValueError(f"passkey length {target_length} is shorter than the prompt without filler ({fixed} tokens)")
    sentences = [_encode(tokenizer, s) for s in FILLER]
    filler: list[list[int]] = []
    budget = target_length - fixed
    while len(sentences[len(filler) % len(sentences)]) <= budget:
        budget -= len(sentences[len(filler) % len(sentences)])
        filler.append(sentences[len(filler) % len(sentences)])
    cut = round(depth * len(filler))
    before = [t for s in filler[:cut] for t in s]
    after = [t for s in filler[cut:] for t in s]
    needle_start = len(head) + len(before)
    ids = head + before + needle + after + tail
    return PasskeyPrompt(ids + answer, len(ids), needle_start, key, depth, target_length)


def make_trials(tokenizer, lengths: Sequence[int], trials: int, key_digits: int, seed: int) -> list[PasskeyPrompt]:
    """`trials` prompts per length; keys and depths from one seeded generator (the same for every variant)."""
    rng = random.Random(seed)
    low, high = 10 ** (key_digits - 1), 10 ** key_digits - 1
    out = []
    for length in lengths:
        for _ in range(trials):
            key, depth = str(rng.randint(low, high)), rng.random()
            out.append(make_prompt(tokenizer, length, key, depth))
    return out


@torch.no_grad()
def greedy_scores(model, prompts: Sequence[PasskeyPrompt], batch_size: int, device) -> list[dict]:
    """Per prompt: greedy exact match of the answer (teacher forcing), its log-probability, the greedy tokens.

    Prompts of equal token length share a batch, so no padding mask is needed (the fast attention paths apply).
    """
    results: list[dict | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p.ids), []).append(i)
    for length, idx in sorted(by_len.items()):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            ids = torch.tensor([prompts[i].ids for i in chunk], dtype=torch.long, device=device)
            logits = model(ids[:, :-1]).logits.float()  # position j predicts token j + 1
            logp = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(chunk):
                p = prompts[i]
                pos = torch.arange(p.answer_start - 1, length - 1, device=device)
                target = ids[row, p.answer_start:]
                greedy = logits[row, pos].argmax(-1)
                results[i] = {
                    "correct": bool((greedy == target).all()),
                    "key_logprob": float(logp[row, pos, target].sum()),
                    "greedy_ids": greedy.tolist(),
                }
    return results  # type: ignore[return-value]


def summarize(prompts: Sequence[PasskeyPrompt], scores: Sequence[dict], train_seq_len: int | None,
              decode: Callable[[list[int]], str] | None = None) -> dict:
    """Accuracy (%) per target length plus every trial."""
    samples, per_length = [], {}
    for p, s in zip(prompts, scores):
        samples.append({
            "target_length": p.target_length, "tokens": len(p.ids), "key": p.key, "depth": round(p.depth, 6),
            "needle_token": p.needle_start, "correct": s["correct"], "key_logprob": s["key_logprob"],
            "greedy": decode(s["greedy_ids"]) if decode else s["greedy_ids"],
        })
        per_length.setdefault(p.target_length, []).append(samples[-1])
    lengths = []
    for length, rows in per_length.items():
        n_ok = sum(r["correct"] for r in rows)
        lengths.append({
            "target_length": length,
            "mean_tokens": sum(r["tokens"] for r in rows) / len(rows),
            "trials": len(rows),
            "correct": n_ok,
            "accuracy": 100.0 * n_ok / len(rows),
            "mean_key_logprob": sum(r["key_logprob"] for r in rows) / len(rows),
            "beyond_training_context": train_seq_len is not None and max(r["tokens"] for r in rows) > train_seq_len,
        })
    return {
        "accuracy_by_length": {str(r["target_length"]): r["accuracy"] for r in lengths},
        "lengths": lengths,
        "samples": samples,
    }


def check_config(cfg: dict) -> dict:
    """The passkey section with defaults filled in; clear errors for bad values (the schema checks types)."""
    cfg = {**DEFAULTS, **(cfg or {})}
    if not cfg["lengths"] or any(int(n) < 2 for n in cfg["lengths"]):
        raise ValueError(f"config key 'passkey.lengths' must list token lengths >= 2, got {cfg['lengths']!r}")
    if cfg["trials"] < 1:
        raise ValueError(f"config key 'passkey.trials' must be >= 1, got {cfg['trials']!r}")
    return cfg


def run_passkey(model_dir: str | Path, data_dir: str | Path, passkey_cfg: dict, out_json: str | Path, *,
                variant: str, seed: int, train_seq_len: int | None, device: str = "cpu") -> dict:
    """Score one trained model on the passkey trials and write results/<run>/passkey/<variant>.json."""
    from .data import load_tokenizer
    from .loading import load_model

    cfg = check_config(passkey_cfg)
    tokenizer = load_tokenizer(data_dir)
    prompts = make_trials(tokenizer, cfg["lengths"], cfg["trials"], cfg["key_digits"], seed)  # fails before loading
    dtype = getattr(torch, cfg["dtype"])
    model = load_model(model_dir, dtype=dtype, device=device)  # files checked against the manifest; finite
    scores = greedy_scores(model, prompts, cfg["batch_size"], device)
    result = {
        "variant": variant,
        "attention_kind": getattr(model.config, "attention_kind", None),
        "model_dir": str(model_dir),
        "scoring": "greedy exact match by teacher forcing: correct when the argmax at every key token is that token",
        "seed": seed,
        "train_seq_len": train_seq_len,
        "config": cfg,
        **summarize(prompts, scores, train_seq_len, decode=tokenizer.decode),
    }
    write_json_atomic(out_json, result)
    return result

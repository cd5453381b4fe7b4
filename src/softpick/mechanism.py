"""The attention-sink mechanism on a synthetic task: Bigram-Backcopy (Guo et al. 2024, arXiv 2410.13835).

Sequences are drawn from the embedded corpus's own bigram statistics (the run's tokens_train.npy):

* the task vocabulary is BOS (task id 0) plus the `vocab_size` most frequent corpus tokens
  (task ids 1..V, most frequent first; special tokens excluded). Restricting to the top V keeps
  the output layer small, so a job trains in about a minute on one CPU core; bigram counts are
  taken over the corpus pairs whose two tokens are both in that set (a row without any count
  falls back to the unigram distribution);
* the triggers are the `num_triggers` most frequent tokens (task ids 1..k);
* every sequence starts with BOS; the first token is drawn from the unigram distribution of the
  non-trigger tokens; after a trigger the next token copies the token before the trigger;
  otherwise it is drawn from the bigram row of the current token. (A copied token is never a
  trigger, so the rule is well defined at every position.)

A small model of the project's own class (SoftpickForCausalLM, softmax or softpick attention)
is trained with AdamW on freshly generated batches (seeded: the same config gives the same
numbers). On held-out sequences the stage measures, with softpick.analysis's sink metrics:
the sink rate over layer x head x sample; the mean attention on BOS at trigger queries (where
the head must copy) and at the other queries (where a softmax head, having nothing to do,
parks its weight on BOS: the sink); the residual-stream norm at BOS vs the other positions
for every hidden state; accuracy at copy positions and at bigram positions, the latter beside
the Bayes-optimal accuracy of the true bigram model.

    python -m softpick mechanism --variant softmax     # results/<run>/mechanism/softmax.json
    python -m softpick mechanism_figure                # figures/<run>/mechanism.png / .pdf (softpick.figures.mechanism)
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .analysis import Batch, PassInfo, SinkRate, sink_rate, sink_scores
from .atomic import write_json_atomic
from .schedule import warmup_cosine

__all__ = [
    "BOS", "BigramBackcopy", "bigram_task_from_tokens", "load_task", "build_model", "train_model",
    "measure", "run_mechanism",
]

BOS = 0  # task id of BOS; corpus tokens get ids 1..V


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------
class BigramBackcopy:
    """The Bigram-Backcopy distribution over task ids 0..V (0 = BOS).

    transition: float64 [V+1, V+1], row a = distribution of the token after a (row 0 and column 0
    unused: BOS is only ever the first token). first: float64 [V+1], distribution of the token after
    BOS (non-triggers only). triggers: sorted task ids that trigger a copy.
    """

    def __init__(self, transition: np.ndarray, first: np.ndarray, triggers: Sequence[int],
                 corpus_ids: np.ndarray | None = None):
        transition = np.asarray(transition, dtype=np.float64)
        first = np.asarray(first, dtype=np.float64)
        n = transition.shape[0]
        if transition.shape != (n, n) or first.shape != (n,):
            raise ValueError(f"transition must be square [V+1, V+1] and first [V+1]; got {transition.shape}, {first.shape}")
        self.triggers = np.array(sorted(int(t) for t in triggers), dtype=np.int64)
        if self.triggers.size == 0 or self.triggers.min() < 1 or self.triggers.max() >= n:
            raise ValueError(f"triggers must be task ids in 1..{n - 1}, got {self.triggers.tolist()}")
        if self.triggers.size >= n - 1:
            raise ValueError("at least one token must not be a trigger")
        if first[self.triggers].any() or first[BOS]:
            raise ValueError("the first token after BOS must be a non-trigger token")
        if transition[:, BOS].any():
            raise ValueError("BOS must not follow any token")
        self.transition = transition / transition.sum(axis=1, keepdims=True).clip(min=1e-300)
        self.first = first / first.sum()
        self.is_trigger = np.zeros(n, dtype=bool)
        self.is_trigger[self.triggers] = True
        self.corpus_ids = corpus_ids
        self._cdf = np.cumsum(self.transition, axis=1)
        self._first_cdf = np.cumsum(self.first)

    @property
    def num_tokens(self) -> int:
        """V + 1: the corpus tokens of the task plus BOS."""
        return self.transition.shape[0]

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """int64 [batch, length] sequences: BOS, then `length - 1` tokens by the rules above."""
        if length < 2:
            raise ValueError(f"sequence length must be >= 2, got {length}")
        x = np.empty((batch, length), dtype=np.int64)
        x[:, 0] = BOS
        x[:, 1] = _draw(self._first_cdf[None, :], rng.random(batch))
        for t in range(2, length):
            prev = x[:, t - 1]
            nxt = _draw(self._cdf[prev], rng.random(batch))
            copy = self.is_trigger[prev]
            nxt[copy] = x[copy, t - 2]
            x[:, t] = nxt
        return x

    def bigram_argmax(self) -> np.ndarray:
        return self.transition.argmax(axis=1)


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling, one draw per row: the first index whose cumulative mass exceeds u."""
    idx = (cdf <= u[:, None]).sum(axis=1)
    return np.minimum(idx, cdf.shape[1] - 1)


def bigram_task_from_tokens(tokens: np.ndarray, vocab_size: int, num_triggers: int,
                            exclude: Sequence[int] = ()) -> BigramBackcopy:
    """The task from a corpus token stream: top-`vocab_size` tokens (ids in `exclude` never count),
    the `num_triggers` most frequent of them as triggers, bigram rows from adjacent pairs."""
    tokens = np.asarray(tokens).astype(np.int64, copy=False)
    if num_triggers < 1 or num_triggers >= vocab_size:
        raise ValueError(f"mechanism.num_triggers ({num_triggers}) must be in 1..mechanism.vocab_size - 1 ({vocab_size - 1})")
    counts = np.bincount(tokens, minlength=int(tokens.max(initial=0)) + 1).astype(np.int64)
    for e in exclude:
        if 0 <= e < counts.size:
            counts[e] = 0
    available = int(np.count_nonzero(counts))
    if available < vocab_size:
        raise ValueError(f"mechanism.vocab_size ({vocab_size}) exceeds the {available} distinct non-special tokens of the corpus")
    order = np.argsort(-counts, kind="stable")[:vocab_size]  # most frequent first; ties by corpus id
    task_id = np.zeros(counts.size, dtype=np.int64)  # 0 = not in the task
    task_id[order] = np.arange(1, vocab_size + 1)
    a, b = task_id[tokens[:-1]], task_id[tokens[1:]]
    keep = (a > 0) & (b > 0)
    n = vocab_size + 1
    pair = np.bincount(a[keep] * n + b[keep], minlength=n * n).reshape(n, n).astype(np.float64)
    unigram = np.zeros(n)
    unigram[1:] = counts[order]
    empty = pair.sum(axis=1) == 0
    pair[empty] = unigram
    pair[BOS] = unigram  # unused (BOS is never a previous token after position 0)
    triggers = np.arange(1, num_triggers + 1)
    first = unigram.copy()
    first[triggers] = 0.0
    return BigramBackcopy(pair, first, triggers, corpus_ids=order)


def load_task(data_dir: str | Path, cfg: dict) -> tuple[BigramBackcopy, dict]:
    """The task from the run's training tokens (data stage output) and a description for the JSON."""
    from .data import load_tokens

    data_dir = Path(data_dir)
    tokens, _ = load_tokens(data_dir, "train")
    manifest_path = data_dir / "manifest.json"
    tok = json.loads(manifest_path.read_text()).get("tokenizer", {}) if manifest_path.exists() else {}
    special = sorted({int(tok[k]) for k in ("unk_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
                      if tok.get(k) is not None})
    task = bigram_task_from_tokens(np.asarray(tokens), cfg["vocab_size"], cfg["num_triggers"], exclude=special)
    in_task = np.isin(np.asarray(tokens), task.corpus_ids)
    info = {
        "source": str(data_dir / "tokens_train.npy"),
        "corpus_tokens": int(tokens.shape[0]),
        "excluded_special_ids": special,
        "vocab_size": cfg["vocab_size"],
        "num_triggers": cfg["num_triggers"],
        "corpus_coverage": float(in_task.mean()),  # share of corpus tokens inside the task vocabulary
        "trigger_corpus_ids": task.corpus_ids[task.triggers - 1].tolist(),
        "task_corpus_ids": task.corpus_ids.tolist(),  # task id i + 1 = corpus id task_corpus_ids[i]
        "bigram_entropy_bits": _bigram_entropy_bits(task),
    }
    return task, info


def _bigram_entropy_bits(task: BigramBackcopy) -> float:
    """Mean entropy (bits) of the non-trigger bigram rows, weighted by the first-token distribution."""
    p = task.transition[1:][~task.is_trigger[1:]]
    h = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=1)
    w = task.first[1:][~task.is_trigger[1:]]
    return float((h * w).sum() / w.sum())


# ----------------------------------------------------------------------------------------------
# Model and training
# ----------------------------------------------------------------------------------------------
def build_model(cfg: dict, variant: str, num_tokens: int):
    from .model import SoftpickConfig, SoftpickForCausalLM

    config = SoftpickConfig(
        vocab_size=num_tokens,
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=cfg["seq_len"],
        initializer_range=cfg["initializer_range"],
        attention_kind=variant,
        attention_backend="torch",
        bos_token_id=BOS,
        eos_token_id=None,
    )
    return SoftpickForCausalLM(config)


def _rngs(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent streams for training batches, held-out sequences and the training-time probe."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x6B6B]).spawn(3))


def lr_factor(step: int, cfg: dict) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to min_lr_ratio at the last step."""
    return warmup_cosine(step, 1.0, cfg["min_lr_ratio"], cfg["warmup_steps"], cfg["steps"])


def train_model(model, task: BigramBackcopy, cfg: dict, rng: np.random.Generator, log=print,
                probe: np.ndarray | None = None) -> dict:
    """AdamW on freshly generated batches (next-token loss at every position); returns the log.

    Every `log_every` steps the log records the loss and, on the fixed `probe` sequences (if given),
    the sink rate, the attention on BOS at non-trigger queries and the copy accuracy: how the sink forms."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                            weight_decay=cfg["weight_decay"], eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    history, t0, c0 = [], time.perf_counter(), time.process_time()
    model.train()
    for step in range(1, cfg["steps"] + 1):
        x = torch.from_numpy(task.sample(rng, cfg["batch_size"], cfg["seq_len"] + 1))
        loss = model(input_ids=x[:, :-1], targets=x[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        sched.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"mechanism training diverged at step {step} (loss {loss.item()}); lower mechanism.lr")
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            entry = {"step": step, "loss": float(loss.item())}
            if probe is not None:
                entry.update(_probe(model, task, probe, cfg))
                model.train()
            history.append(entry)
            log(f"step {step:5d}  " + "  ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step")
                + f"  {time.perf_counter() - t0:.1f}s")
    return {"log": history, "final_loss": history[-1]["loss"], "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def _probe(model, task: BigramBackcopy, probe: np.ndarray, cfg: dict) -> dict:
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(probe)
        inp, tgt = x[:, :-1], x[:, 1:]
        out = model(input_ids=inp, output_attentions=True)
        att = attention_measures(out.attentions, inp, task.is_trigger, 1)
        copy = torch.from_numpy(task.is_trigger)[inp]
        copy[:, 0] = False
        hit = out.logits.argmax(-1) == tgt
    eps = cfg["sink_eps"][-1]
    return {f"sink_rate_{eps:g}": sink_rate(att["sink"], eps),
            "bos_attention_non_trigger": float(_nanmean(att["bos_other"])),
            "copy_accuracy": float(hit[copy].double().mean())}


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------
def _nanmean(x: np.ndarray, axis=None):
    """Mean over the non-NaN entries (NaN where there are none: e.g. no trigger query in a sample)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def attention_measures(attns: Sequence[torch.Tensor], inputs: torch.Tensor, is_trigger: np.ndarray,
                       map_size: int) -> dict:
    """Per-batch attention numbers: sink scores [L, H, B] (all queries, softpick.analysis.sink_scores),
    per-sample mean weight on BOS at trigger / non-trigger queries [L, H, B] (BOS's own query
    excluded), weight on the previous token at trigger queries [L, H, B] (the copy's source)
    and the summed [L, H, m, m] top-left attention map."""
    trig = torch.from_numpy(is_trigger)[inputs]  # [B, T] query token is a trigger
    trig[:, 0] = False
    other = ~trig
    other[:, 0] = False
    out = {"sink": [], "bos_trigger": [], "bos_other": [], "prev_trigger": [], "map_sum": []}
    for a in attns:  # [B, H, T, T]
        a = a.detach()
        out["sink"].append(sink_scores(a).T)
        out["bos_trigger"].append(sink_scores(a, query_mask=trig).T)
        out["bos_other"].append(sink_scores(a, query_mask=other).T)
        sub = torch.diagonal(a, offset=-1, dim1=-2, dim2=-1).to(torch.float64)  # [B, H, T-1]: weight on t-1
        m = trig[:, None, 1:].to(torch.float64)
        n = m.sum(-1)
        out["prev_trigger"].append(torch.where(n > 0, (sub * m).sum(-1) / n.clamp_min(1), torch.nan).T)
        out["map_sum"].append(a[:, :, :map_size, :map_size].to(torch.float64).sum(0))
    return {k: torch.stack(v).numpy() for k, v in out.items()}


def measure(model, task: BigramBackcopy, cfg: dict, rng: np.random.Generator) -> dict:
    """Every number of the JSON on `cfg['eval_sequences']` fresh held-out sequences."""
    model.eval()
    n_total, bs, T = cfg["eval_sequences"], cfg["eval_batch_size"], cfg["seq_len"]
    m = min(cfg["map_size"], T)
    argmax = torch.from_numpy(task.bigram_argmax())
    trans = torch.from_numpy(task.transition)
    is_trigger = task.is_trigger
    parts: dict[str, list] = {}
    sinks = SinkRate(cfg["sink_eps"])  # the analysis's sink-rate accumulator
    sinks.begin(PassInfo(num_docs=n_total))
    sums = {k: 0.0 for k in ("copy_hit", "copy_n", "bigram_hit", "bigram_agree", "bigram_n", "bayes_hit",
                             "bayes_expected", "first_hit", "first_n", "nll_copy", "nll_bigram", "nll_bayes", "nll_all", "n_all")}
    norms = []
    done = 0
    with torch.no_grad():
        while done < n_total:
            b = min(bs, n_total - done)
            x = torch.from_numpy(task.sample(rng, b, T + 1))
            inp, tgt = x[:, :-1], x[:, 1:]
            out = model(input_ids=inp, output_attentions=True, output_hidden_states=True)
            sinks.observe(Batch(idx=np.arange(done, done + b), ids=inp, mask=None, attentions=out.attentions))
            for k, v in attention_measures(out.attentions, inp, is_trigger, m).items():
                if k != "sink":  # measured by `sinks`
                    parts.setdefault(k, []).append(v)
            hs = torch.stack([h.detach().norm(dim=-1) for h in out.hidden_states])  # [S, B, T]
            norms.append(hs.to(torch.float64))
            logp = torch.log_softmax(out.logits.double(), dim=-1)
            nll = -logp.gather(-1, tgt[..., None])[..., 0]
            pred = logp.argmax(-1)
            copy = torch.from_numpy(is_trigger)[inp]
            copy[:, 0] = False
            bigram = ~copy
            bigram[:, 0] = False
            hit = pred == tgt
            sums["copy_hit"] += hit[copy].sum().item()
            sums["copy_n"] += copy.sum().item()
            sums["bigram_hit"] += hit[bigram].sum().item()
            sums["bigram_agree"] += (pred == argmax[inp])[bigram].sum().item()
            sums["bigram_n"] += bigram.sum().item()
            sums["bayes_hit"] += (argmax[inp] == tgt)[bigram].sum().item()
            sums["bayes_expected"] += trans[inp].max(-1).values[bigram].sum().item()
            sums["first_hit"] += hit[:, 0].sum().item()
            sums["first_n"] += b
            sums["nll_copy"] += nll[copy].sum().item()
            sums["nll_bigram"] += nll[bigram].sum().item()
            sums["nll_bayes"] += (-torch.log(trans[inp, tgt].clamp_min(1e-300)))[bigram].sum().item()
            sums["nll_all"] += nll.sum().item()
            sums["n_all"] += nll.numel()
            done += b
    arr = {k: np.concatenate(v, axis=-1) if k != "map_sum" else np.sum(v, axis=0) for k, v in parts.items()}
    norms = torch.cat(norms, dim=1).numpy()  # [S, N, T]
    L = sinks.scores.shape[0]
    bos_norm = norms[:, :, 0].mean(axis=1)
    other_norm = norms[:, :, 1:].mean(axis=(1, 2))
    s = sums
    return {
        "eval_sequences": n_total,
        "trigger_query_fraction": s["copy_n"] / (s["copy_n"] + s["bigram_n"]),
        **sinks.rates(),  # sink_rate, sink_rate_per_layer
        "sink_score_mean": sinks.score_means().tolist(),  # [L][H]
        "bos_attention": {
            "trigger_queries": float(_nanmean(arr["bos_trigger"])),
            "non_trigger_queries": float(_nanmean(arr["bos_other"])),
            "per_head_trigger_queries": _nanmean(arr["bos_trigger"], axis=-1).tolist(),
            "per_head_non_trigger_queries": _nanmean(arr["bos_other"], axis=-1).tolist(),
        },
        "previous_token_attention_at_triggers": {
            "mean": float(_nanmean(arr["prev_trigger"])),
            "per_head": _nanmean(arr["prev_trigger"], axis=-1).tolist(),
        },
        "residual_norm": {
            "hidden_states": ["embedding", *[f"layer {i + 1}" for i in range(L)], "final norm"],
            "bos": bos_norm.tolist(),
            "others": other_norm.tolist(),
            "bos_over_others": (bos_norm / other_norm).tolist(),
        },
        "accuracy": {
            "copy": s["copy_hit"] / s["copy_n"],
            "bigram": s["bigram_hit"] / s["bigram_n"],
            "bigram_argmax_agreement": s["bigram_agree"] / s["bigram_n"],  # model's guess == the bigram row's argmax
            "bigram_bayes_optimal": s["bayes_hit"] / s["bigram_n"],  # the true model's argmax on the same tokens
            "bigram_bayes_optimal_expected": s["bayes_expected"] / s["bigram_n"],  # E[max_b P(b | a)]
            "first_token": s["first_hit"] / s["first_n"],
            "copy_positions": int(s["copy_n"]),
            "bigram_positions": int(s["bigram_n"]),
        },
        "loss": {
            "all": s["nll_all"] / s["n_all"],
            "copy": s["nll_copy"] / s["copy_n"],
            "bigram": s["nll_bigram"] / s["bigram_n"],
            "bigram_bayes_optimal": s["nll_bayes"] / s["bigram_n"],
        },
        "attention_map": {"size": m, "mean": (arr["map_sum"] / n_total).tolist()},  # [L][H][m][m]
    }


def run_mechanism(config: dict, variant: str, data_dir: str | Path, out_json: str | Path, log=print) -> dict:
    """Build the task from the run's tokens, train one variant, measure, write out_json atomically."""
    cfg = config["mechanism"]
    _check(cfg)
    torch.set_num_threads(cfg["threads"])
    seed = int(config["seed"])
    t0, c0 = time.perf_counter(), time.process_time()
    task, task_info = load_task(data_dir, cfg)
    train_rng, eval_rng, probe_rng = _rngs(seed)
    probe = task.sample(probe_rng, cfg["probe_sequences"], cfg["seq_len"] + 1) if cfg["probe_sequences"] else None
    torch.manual_seed(seed)
    model = build_model(cfg, variant, task.num_tokens)
    log(f"mechanism {variant}: {sum(p.numel() for p in model.parameters())} parameters, "
        f"V={cfg['vocab_size']}, {cfg['num_triggers']} triggers, {cfg['steps']} steps")
    train_info = train_model(model, task, cfg, train_rng, log=log, probe=probe)
    t1 = time.perf_counter()
    results = measure(model, task, cfg, eval_rng)
    summary = {
        "variant": variant,
        "seed": seed,
        "config": cfg,
        "task": task_info,
        "model": {"parameters": int(sum(p.numel() for p in model.parameters())),
                  **{k: model.config.to_dict()[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                            "num_attention_heads", "intermediate_size", "attention_kind")}},
        "train": train_info,
        **results,
        "timing": {"train_s": train_info["seconds"], "train_cpu_s": train_info["cpu_seconds"],
                   "eval_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0,
                   "total_cpu_s": time.process_time() - c0},
    }
    write_json_atomic(out_json, _finite_or_none(summary))
    acc = results["accuracy"]
    log(f"sink rate (eps {cfg['sink_eps']}) {results['sink_rate']}; copy acc {acc['copy']:.3f}, bigram acc "
        f"{acc['bigram']:.3f} (Bayes {acc['bigram_bayes_optimal']:.3f}); wrote {out_json}")
    return summary


def _check(cfg: dict) -> None:
    if cfg["hidden_size"] % cfg["num_heads"]:
        raise ValueError(f"config key 'mechanism.hidden_size' ({cfg['hidden_size']}) must be divisible by "
                         f"'mechanism.num_heads' ({cfg['num_heads']})")
    if (cfg["hidden_size"] // cfg["num_heads"]) % 2:
        raise ValueError("config keys 'mechanism.hidden_size' / 'mechanism.num_heads' must give an even head size (RoPE)")
    if cfg["num_triggers"] >= cfg["vocab_size"]:
        raise ValueError(f"config key 'mechanism.num_triggers' ({cfg['num_triggers']}) must be below "
                         f"'mechanism.vocab_size' ({cfg['vocab_size']})")


def _finite_or_none(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    return o

"""Attention benchmark on a CUDA device: softmax SDPA / fla softmax / materialised softpick / ours.

bf16, causal, layout [B, T, H, D]. For each (B, T, H, D): forward and forward+backward time,
TFLOP/s (causal forward = 2 * 2 * B * H * T^2 * D / 2; backward = 2.5x forward, so
fwd+bwd = 3.5x forward) and peak memory of one fwd+bwd above the inputs. Then one training
step (fwd + bwd + AdamW) of a 340M-like Llama (hidden 1024, 24 layers, 16 heads, seq 4096,
bf16, torch.compile) with softpick (our kernel) vs softmax (SDPA). Writes JSON + PNG.

    python benchmarks/bench_attention.py --out results/bench
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from softpick.attention.reference import naive_attention  # noqa: E402
from softpick.attention.triton import softpick_flash_attention  # noqa: E402

SHAPES = [(8, 2048, 16, 64), (4, 4096, 16, 128), (16, 1024, 12, 64), (1, 16384, 16, 64)]
# measured once on the H200 (from the issue), fwd+bwd TFLOP/s
ISSUE_SDPA = [296, 454, 213, 433]
ISSUE_FLA = [136, 240, 96, 205]


def flops_fwd(B, T, H, D):
    return 4 * B * H * T * T * D / 2


def sdpa_fn(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]

    def f(q, k, v):
        with sdpa_kernel([be]):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return o.transpose(1, 2)

    return f


def fla_fn():
    from fla.ops.attn import parallel_attn

    return lambda q, k, v: parallel_attn(q, k, v)


def naive_fn(q, k, v):
    return naive_attention(q, k, v, kind="softpick", causal=True)[0]


def ours_fn(q, k, v):
    return softpick_flash_attention(q, k, v, causal=True)


def bench_one(fn, B, T, H, D, reps_ms=200):
    from triton.testing import do_bench

    torch.manual_seed(0)
    mk = lambda: torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    q, k, v = mk(), mk(), mk()
    do = torch.randn_like(q)
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    res = {}
    with torch.no_grad():
        res["fwd_ms"] = do_bench(lambda: fn(q, k, v), warmup=25, rep=reps_ms, return_mode="median")

    def fb():
        o = fn(qg, kg, vg)
        torch.autograd.grad(o, (qg, kg, vg), do)

    res["fwdbwd_ms"] = do_bench(fb, warmup=25, rep=reps_ms, return_mode="median")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fb()
    torch.cuda.synchronize()
    res["peak_mem_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    f = flops_fwd(B, T, H, D)
    res["fwd_tflops"] = f / res["fwd_ms"] / 1e9
    res["fwdbwd_tflops"] = 3.5 * f / res["fwdbwd_ms"] / 1e9
    return res


def attention_benchmarks(providers):
    out = []
    for i, (B, T, H, D) in enumerate(SHAPES):
        row = {"shape": [B, T, H, D]}
        for name, fn in providers.items():
            try:
                r = bench_one(fn, B, T, H, D)
            except torch.OutOfMemoryError:
                r = {"error": "OOM"}
            except Exception as e:  # noqa: BLE001
                r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            torch.cuda.empty_cache()
            row[name] = r
            msg = (f"fwd {r['fwd_tflops']:6.1f}  fwd+bwd {r['fwdbwd_tflops']:6.1f} TFLOP/s  "
                   f"({r['fwd_ms']:.3f} / {r['fwdbwd_ms']:.3f} ms)  peak {r['peak_mem_gib']:.2f} GiB"
                   if "error" not in r else r["error"])
            print(f"{str((B, T, H, D)):22s} {name:12s} {msg}", flush=True)
        sd = [row[n] for n in ("sdpa_cudnn", "sdpa_flash") if n in row and "error" not in row[n]]
        if sd:
            best = max(sd, key=lambda r: r["fwdbwd_tflops"])
            row["sdpa_best"] = best
        out.append(row)
    return out


def kernel_breakdown(shapes=((16, 1024, 12, 64), (8, 2048, 16, 64))):
    """Per-kernel GPU time of our fwd + bwd (torch.profiler), to separate kernel time from overhead."""
    try:
        from torch.profiler import ProfilerActivity, profile

        for B, T, H, D in shapes:
            q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            q, k, v = (x.requires_grad_() for x in (q, k, v))
            for _ in range(3):
                torch.autograd.grad(ours_fn(q, k, v), (q, k, v), do)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    torch.autograd.grad(ours_fn(q, k, v), (q, k, v), do)
                torch.cuda.synchronize()
            print(f"kernel breakdown {(B, T, H, D)} (5 fwd+bwd):", flush=True)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8), flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"kernel breakdown failed: {e}", flush=True)


# ------------------------------------------------------------------------------ training step

def _minimal_llama(kind, vocab, hidden, layers, heads, inter):
    """Fallback when softpick.model is unavailable: a plain pre-norm Llama block stack."""
    import torch.nn as nn

    from softpick.attention import attention

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(hidden, eps=1e-6), nn.RMSNorm(hidden, eps=1e-6)
            self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
            self.o = nn.Linear(hidden, hidden, bias=False)
            self.gu = nn.Linear(hidden, 2 * inter, bias=False)
            self.d = nn.Linear(inter, hidden, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.n1(x)).view(B, T, 3, heads, C // heads).unbind(2)
            a, _ = attention(q, k, v, kind=kind)
            x = x + self.o(a.reshape(B, T, C))
            g, u = self.gu(self.n2(x)).chunk(2, -1)
            return x + self.d(F.silu(g) * u)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, hidden)
            self.layers = nn.ModuleList(Block() for _ in range(layers))
            self.norm = nn.RMSNorm(hidden, eps=1e-6)
            self.head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, ids, labels):
            x = self.emb(ids)
            for blk in self.layers:
                x = blk(x)
            logits = self.head(self.norm(x)).float()
            return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))

    return LM()


def train_step_bench(kind, batch=4, seq=4096, steps=8):
    vocab, hidden, layers, heads, inter = 32000, 1024, 24, 16, 2816
    source = "softpick.model.SoftpickForCausalLM"
    try:
        from softpick.model import SoftpickConfig, SoftpickForCausalLM

        cfg = SoftpickConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=inter,
                             attention_kind=kind, attention_backend="auto")
        model = SoftpickForCausalLM(cfg)
        loss_fn = lambda m, ids: m(input_ids=ids, labels=ids).loss  # noqa: E731
    except Exception as e:  # noqa: BLE001
        print(f"softpick.model unavailable ({type(e).__name__}: {e}); minimal Llama stack", flush=True)
        source = "minimal Llama stack in bench_attention.py"
        model = _minimal_llama(kind, vocab, hidden, layers, heads, inter)
        loss_fn = lambda m, ids: m(ids, ids)  # noqa: E731
    model = model.to(device="cuda", dtype=torch.bfloat16)
    model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-15, weight_decay=0.1,
                            fused=True)
    ids = torch.randint(0, vocab, (batch, seq), device="cuda")

    def step():
        loss = loss_fn(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    times = []
    for _ in range(steps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        loss = step()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    med = times[len(times) // 2]
    res = {"kind": kind, "model": source, "batch": batch, "seq": seq, "step_ms_median": med,
           "tokens_per_s": batch * seq / med * 1e3, "warmup_compile_s": compile_s, "loss": float(loss),
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(f"train step {kind:9s}: {med:.1f} ms/step, {res['tokens_per_s']:.0f} tok/s "
          f"(warm-up+compile {compile_s:.0f}s, loss {float(loss):.3f})", flush=True)
    del model, opt
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return res


# ------------------------------------------------------------------------------ report

def targets(rows):
    rep = []
    for i, row in enumerate(rows):
        ours, sd, fla = row.get("ours", {}), row.get("sdpa_best", {}), row.get("fla_softmax", {})
        if "error" in ours or not sd:
            continue
        t = {"shape": row["shape"],
             "fwdbwd_vs_sdpa": ours["fwdbwd_tflops"] / sd["fwdbwd_tflops"],
             "fwd_vs_sdpa": ours["fwd_tflops"] / sd["fwd_tflops"]}
        if fla and "error" not in fla:
            t["fwdbwd_vs_fla"] = ours["fwdbwd_tflops"] / fla["fwdbwd_tflops"]
            t["fwd_vs_fla"] = ours["fwd_tflops"] / fla["fwd_tflops"]
        t["mem_vs_sdpa"] = ours["peak_mem_gib"] / max(sd["peak_mem_gib"], 1e-9)
        t["met"] = {"fwdbwd>=0.75sdpa": t["fwdbwd_vs_sdpa"] >= 0.75, "fwd>=0.8sdpa": t["fwd_vs_sdpa"] >= 0.8,
                    "fwdbwd>=1.5fla": t.get("fwdbwd_vs_fla", 0) >= 1.5}
        if row["shape"][1] == 16384:
            t["met"]["mem<=1.2sdpa"] = t["mem_vs_sdpa"] <= 1.2
        rep.append(t)
    return rep


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["sdpa_best", "fla_softmax", "naive_softpick", "ours"]
    labels = ["SDPA softmax (best of cuDNN/flash)", "fla Triton softmax", "materialised softpick",
              "ours: Triton softpick"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    xs = range(len(rows))
    w = 0.2
    for ax, key, title in zip(axes, ["fwd_tflops", "fwdbwd_tflops"], ["forward", "forward + backward"]):
        for j, (n, lab) in enumerate(zip(names, labels)):
            vals = [row.get(n, {}).get(key, 0.0) for row in rows]
            bars = ax.bar([x + (j - 1.5) * w for x in xs], vals, w, label=lab)
            for b, val in zip(bars, vals):
                ax.text(b.get_x() + b.get_width() / 2, val, f"{val:.0f}" if val else "x", ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([str(tuple(r["shape"])) for r in rows], fontsize=8)
        ax.set_xlabel("(B, T, H, D), bf16, causal")
        ax.set_ylabel("TFLOP/s")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Causal attention on {torch.cuda.get_device_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--tag", default="attention")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    import triton

    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "issue_sdpa_fwdbwd": ISSUE_SDPA, "issue_fla_fwdbwd": ISSUE_FLA,
            "configs_env": {k: v for k, v in os.environ.items() if k.startswith("SOFTPICK_")}}
    print(meta, flush=True)
    providers = {"sdpa_cudnn": sdpa_fn("cudnn"), "sdpa_flash": sdpa_fn("flash")}
    try:
        providers["fla_softmax"] = fla_fn()
    except Exception as e:  # noqa: BLE001
        print(f"fla unavailable: {e}", flush=True)
    providers["ours"] = ours_fn
    providers["naive_softpick"] = naive_fn
    rows = attention_benchmarks(providers)
    kernel_breakdown()
    rep = targets(rows)
    for t in rep:
        print(t, flush=True)
    result = {"meta": meta, "attention": rows, "targets": rep}
    with open(os.path.join(args.out, f"{args.tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    try:
        plot(rows, os.path.join(args.out, f"{args.tag}.png"))
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    if not args.no_train:
        train = {}
        for kind in ("softmax", "softpick"):
            try:
                train[kind] = train_step_bench(kind)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                train[kind] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if all("tokens_per_s" in train[k] for k in train):
            train["softpick_over_softmax"] = train["softpick"]["tokens_per_s"] / train["softmax"]["tokens_per_s"]
            print(f"train tokens/s softpick / softmax = {train['softpick_over_softmax']:.3f}", flush=True)
        result["train_step"] = train
        with open(os.path.join(args.out, f"{args.tag}.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

"""Sweep (BLOCK_M, BLOCK_N, num_warps, num_stages) of the three softpick kernels on a CUDA device.

Times the forward, and the backward with one kernel's config varied at a time (the other at its
default), through the SOFTPICK_{FWD,DKDV,DQ}_CFG overrides. Prints a table per kernel and shape;
the winners go into ops.py's *_config defaults by hand (so normal runs never autotune).

    python benchmarks/tune_attention.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from softpick.attention.triton.ops import flash_bwd, flash_fwd  # noqa: E402

CANDS = {
    ("fwd", 64): [(64, 64, 4, 3), (128, 64, 8, 3), (64, 64, 4, 4)],
    ("fwd", 128): [(64, 64, 4, 3), (64, 64, 4, 4)],
    # v3: spill-free under ptxas sm_90 first; the v2 choices last for comparison
    ("dkdv", 64): [(64, 64, 8, 3), (32, 64, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (64, 64, 4, 3)],
    ("dkdv", 128): [(32, 64, 4, 3), (16, 64, 4, 3), (32, 64, 4, 4), (64, 64, 8, 3), (64, 128, 8, 3)],
    ("dq", 64): [(64, 64, 4, 3), (128, 64, 8, 3)],
    ("dq", 128): [(64, 64, 4, 3), (64, 32, 4, 3), (128, 64, 8, 3)],
}
SHAPES = {64: (8, 2048, 16, 64), 128: (4, 4096, 16, 128)}


def main():
    from triton.testing import do_bench

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--emit-env", default=None, help="write `export SOFTPICK_<K>_CFG_D<D>=...` of the winners here")
    args = ap.parse_args()
    best = {}
    for D, (B, T, H, _) in SHAPES.items():
        torch.manual_seed(0)
        q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        scale = D ** -0.5
        fl = 4 * B * H * T * T * D / 2
        o, lse = flash_fwd(q, k, v, None, scale, True)
        for kern in ("fwd", "dkdv", "dq"):
            var = f"SOFTPICK_{kern.upper()}_CFG"
            rows = []
            for cfg in CANDS[(kern, D)][: 3 if args.quick else None]:
                os.environ[var] = ",".join(map(str, cfg))
                try:
                    if kern == "fwd":
                        ms = do_bench(lambda: flash_fwd(q, k, v, None, scale, True), warmup=10, rep=60,
                                      return_mode="median")
                        tf = fl / ms / 1e9
                    else:
                        ms = do_bench(lambda: flash_bwd(do, q, k, v, o, lse, None, scale, True), warmup=10,
                                      rep=60, return_mode="median")
                        tf = 2.5 * fl / ms / 1e9
                    rows.append((ms, cfg, tf))
                    print(f"D={D:3d} {kern:5s} {cfg}: {ms:.3f} ms  {tf:6.1f} TFLOP/s", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"D={D:3d} {kern:5s} {cfg}: FAILED {type(e).__name__}: {str(e)[:120]}", flush=True)
                finally:
                    del os.environ[var]
            if rows:
                rows.sort()
                best[(kern, D)] = rows[0]
    print("BEST:")
    for (kern, D), (ms, cfg, tf) in best.items():
        print(f"  {kern:5s} D={D:3d}: {cfg}  {ms:.3f} ms  {tf:.1f} TFLOP/s")
    if args.emit_env:
        with open(args.emit_env, "w") as f:
            for (kern, D), (ms, cfg, tf) in best.items():
                f.write(f"export SOFTPICK_{kern.upper()}_CFG_D{D}={','.join(map(str, cfg))}\n")


if __name__ == "__main__":
    main()

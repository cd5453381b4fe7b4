"""Sink heads or working heads? Validation loss after zeroing the first token's attention weight in the
heads whose mean weight on it exceeds ε, beside the same knockout in random heads
(results/<run>/knockout/<variant>.json, softpick.knockout)."""
from __future__ import annotations

import json
from pathlib import Path

from .base import Figure
from .style import label_of
from .tables import write_tables


def draw(inputs: dict, out, run_label: str = "ours") -> list[Path]:
    header = ["model", "length", "sink heads", "mean weight on token 0", "loss", "Δ loss (sink heads)",
              "Δ loss (random heads: mean [min, max])"]
    rows, eps = [], None
    for v, p in inputs["knockout"].items():
        d = json.loads(Path(p).read_text())
        eps = d["config"]["eps"]
        for r in d["lengths"]:
            heads = r["sink_heads"]
            where = ", ".join(f"L{l}H{h}" for l, h, _ in heads[:6]) + (" …" if len(heads) > 6 else "")
            mean_w = sum(w for _, _, w in heads) / len(heads) if heads else None
            rnd = r.get("random_knockout_delta")
            rows.append([label_of(v), str(r["length"]), f"{len(heads)} / {r['num_heads_total']}" + (f" ({where})" if heads else ""),
                         "—" if mean_w is None else f"{mean_w:.2f}", f"{r['base_loss']:.4f}",
                         "—" if not heads else f"{r['sink_knockout_delta']:+.4f}",
                         "—" if not rnd else f"{rnd['mean']:+.4f} [{rnd['min']:+.4f}, {rnd['max']:+.4f}]"])
    notes = (f"Sink head: mean attention weight on the first token > ε = {eps} over the windows' queries. Knockout: that "
             "weight set to 0 (no renormalisation), loss on the same validation windows. LxHy = layer x, head y (from 0).")
    return write_tables(header, rows, "First-token knockout of the sink heads", "tab:knockout", out, notes=notes)


FIGURES = (Figure("knockout_table", "table", "knockout_table.rst", "Tables", ("knockout",), draw),)

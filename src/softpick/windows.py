"""Training windows: which token windows each optimizer step reads, and how a window is built.

WindowSampler is the data order (non-overlapping windows of one token stream, shuffled per epoch from
(seed, epoch), so a checkpoint only stores its position); gather_windows cuts the windows (inputs and
targets in one tensor); window_bos_id is train.bos_first's BOS id. The train, dynamics and knockout
stages build their windows here, so they read the same windows the training did.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError


class WindowSampler:
    """Non-overlapping windows of seq_len + 1 tokens from one token stream, shuffled per epoch.

    The order depends only on (seed, epoch), so the position (epoch, cursor) is all a
    checkpoint needs to restore it. No document masking: windows cross document boundaries,
    as in the paper's training.
    """

    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        self.seq_len = seq_len
        self.n_windows = (n_tokens - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"the training split has {n_tokens} tokens, fewer than one window of {seq_len + 1}")
        self.seed = seed
        self.epoch = 0
        self.cursor = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def next_starts(self, count: int) -> np.ndarray:
        out = []
        while len(out) < count:
            if self.cursor == self.n_windows:
                self.epoch += 1
                self.cursor = 0
                self._perm = self._permutation(self.epoch)
            take = min(count - len(out), self.n_windows - self.cursor)
            out.extend(self._perm[self.cursor:self.cursor + take])
            self.cursor += take
        return np.asarray(out, dtype=np.int64) * self.seq_len

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        if state["seq_len"] != self.seq_len or state["seed"] != self.seed:
            raise ValueError("checkpoint was written with another seq_len or seed; refusing to resume")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._perm = self._permutation(self.epoch)


def gather_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, bos_id: int | None = None) -> torch.Tensor:
    """[len(starts), seq_len + 1] windows: inputs x[:, :-1], targets x[:, 1:].

    bos_id (train.bos_first): BOS replaces the first token of every window (Gu et al.'s fixed first
    token); it is an input only, every target stays the stream's next token.
    """
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    x = torch.from_numpy(tokens[idx].astype(np.int64))
    if bos_id is not None:
        x[:, 0] = bos_id
    return x


def window_bos_id(tcfg: dict, tokenizer) -> int | None:
    """The BOS id gather_windows writes first when train.bos_first is set, else None."""
    if not tcfg.get("bos_first", False):
        return None
    if tokenizer.bos_token_id is None:
        raise ConfigError("config key 'train.bos_first' is true but the tokenizer has no BOS token")
    return int(tokenizer.bos_token_id)


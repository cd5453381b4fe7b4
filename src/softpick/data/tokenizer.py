"""Tokenizers of the data stage: a byte-level BPE trained on the train split, or a pretrained one (hub id or
local directory), saved to ``<data dir>/tokenizer`` with ``save_pretrained``."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import default_mode
from .hub import DataSourceUnavailableError, check_hub_reachable

SPECIAL_TOKENS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}  # ids 0, 1, 2, 3


def _wrap_fast(tok_obj) -> "PreTrainedTokenizerFast":  # noqa: F821
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok_obj,
        bos_token=SPECIAL_TOKENS["bos"], eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"], pad_token=SPECIAL_TOKENS["pad"],
        model_max_length=1_000_000_000, clean_up_tokenization_spaces=False,
    )


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Special tokens: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3. The post-processor prepends BOS
    (``tokenizer(text)`` gives ``[1, ...]`` like Llama-2); encode with ``add_special_tokens=False``
    to get bare ids. Deterministic for a given ``texts`` list.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[k] for k in ("unk", "bos", "eos", "pad")]
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size), min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos']} $A", pair=f"{SPECIAL_TOKENS['bos']} $A {SPECIAL_TOKENS['bos']} $B",
        special_tokens=[(SPECIAL_TOKENS["bos"], 1)],
    )
    return _wrap_fast(tok)


def load_pretrained(name: str):
    """AutoTokenizer of a local directory, the local HF cache, else the hub (DataSourceUnavailableError
    naming the tokenizer at once when the hub is off or unreachable)."""
    from transformers import AutoTokenizer

    if Path(name).expanduser().is_dir():
        return AutoTokenizer.from_pretrained(str(Path(name).expanduser()))
    resource = f"pretrained tokenizer '{name}'"
    try:  # already in the local HF cache? (no network)
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception:
        pass
    check_hub_reachable(resource)
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise DataSourceUnavailableError(
            f"could not load {resource} from the Hugging Face hub ({e}); gated models such as "
            f"meta-llama/Llama-2-7b-hf need HF_TOKEN, or use a mirror / local directory") from e


def train_sample(texts: list[str], seed: int, sample_bytes: int | None) -> list[str]:
    """A seeded subsample of ``texts`` of about ``sample_bytes`` UTF-8 bytes (all of them for 0 / None)."""
    if not sample_bytes:
        return list(texts)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x70C])).permutation(len(texts))
    out, total = [], 0
    for i in order:
        if total >= sample_bytes:
            break
        t = texts[i]
        b = t.encode("utf-8")
        if total + len(b) > sample_bytes:  # take a prefix of a long document rather than all of it
            t = b[: sample_bytes - total].decode("utf-8", errors="ignore")
        out.append(t)
        total += len(t.encode("utf-8"))
    return out


def load_tokenizer(out_dir: str | os.PathLike):
    """Load the tokenizer written by the data stage (``out_dir/tokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(out_dir) / "tokenizer"))


def write_tokenizer_dir(path: Path, tok) -> None:
    """save_pretrained into a temporary directory beside `path`, then swap it in (never half written)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp creates 0700
    tok.save_pretrained(str(tmp))
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

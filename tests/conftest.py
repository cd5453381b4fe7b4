import copy
import os

import torch

# The Triton kernels run on the CPU only under the interpreter, and TRITON_INTERPRET is read when
# triton (or a module that uses it: fla, hqq, transformers) is first imported: set it before any
# test module imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import yaml

from softpick.config import DEFAULT_CONFIG

TINY_DATA = {
    "source": "embedded",
    "corpus_path": "data/corpus/corpus.jsonl.xz",
    "max_documents": 40,
    "val_fraction": 0.1,
    "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_sample_bytes": 400_000},
}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """Token files of 40 embedded documents with a 512-token BPE (seconds to build)."""
    from softpick.data import prepare_data

    out = tmp_path_factory.mktemp("data")
    prepare_data(copy.deepcopy(TINY_DATA), out, seed=0)
    return out


@pytest.fixture
def tiny_config():
    """The default config shrunk to a model that trains a step in milliseconds."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config["train"].update(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=12, warmup_steps=2,
                           log_every=1, val_every=4, val_batches=1, checkpoint_every=3, keep_checkpoints=2, lr=1e-2)
    return config

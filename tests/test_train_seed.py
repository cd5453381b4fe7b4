"""train.seed: a second training seed on the same data (configs/small-seed2.yaml) changes the
initialisation and the window order, and the fingerprint, so it never resumes the first seed's run."""
import copy

import torch
from safetensors.torch import load_file

from softpick.checkpoint import fingerprint
from softpick.train import train


def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def _with_seed(config, seed):
    config = copy.deepcopy(config)
    config["train"].update(max_steps=1, val_every=1, checkpoint_every=1)
    if seed is not None:
        config["train"]["seed"] = seed
    return config


def test_train_seed_changes_the_fingerprint(tiny_config, tiny_data_dir):
    base = fingerprint(_with_seed(tiny_config, None), "softpick", tiny_data_dir)["fingerprint"]
    seeded = fingerprint(_with_seed(tiny_config, 80), "softpick", tiny_data_dir)
    assert seeded["fingerprint"] != base
    assert seeded["inputs"]["train"]["seed"] == 80


def test_train_seed_changes_the_weights_and_is_reproducible(tiny_config, tiny_data_dir, tmp_path):
    default_seed = tiny_config["seed"]
    runs = {}
    for name, seed in (("default", None), ("same", default_seed), ("s80", 80), ("s80_again", 80)):
        train(_with_seed(tiny_config, seed), "softpick", tiny_data_dir, tmp_path / name / "softpick")
        runs[name] = _weights(tmp_path / name / "softpick")
    same = lambda a, b: all(torch.equal(runs[a][k], runs[b][k]) for k in runs[a])  # noqa: E731
    assert same("default", "same")        # train.seed equal to the top-level seed: the same model
    assert same("s80", "s80_again")       # deterministic on the CPU
    assert not same("default", "s80")     # another seed: another model

"""W&B logging of the trainer (train.wandb), offline: history, resume into the same run, errors.

The offline run files are read back record by record: a .wandb file is a 7-byte header
(':W&B', magic 0xBEE1, version) and then LevelDB-log framing (32 KiB blocks; each chunk has a
4-byte checksum, 2-byte length and 1-byte type FULL/FIRST/MIDDLE/LAST) around protobuf Records.
"""
import json
import struct
import sys

import pytest

from softpick.config import ConfigError
from softpick.tracking import WANDB_ID_FILE
from softpick.train import train

BLOCK, CHUNK_HEADER, FULL, LAST = 32768, 7, 1, 4


def wandb_records(path) -> list:
    """The protobuf Records of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, pending = [], 7, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if left < CHUNK_HEADER or (length == 0 and kind == 0):  # block trailer / zero padding
            pos += left
            continue
        if pos + CHUNK_HEADER + length > len(data):  # a chunk still being written
            break
        pending += data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_records(path) -> list:
    """The Records of a finished run. wandb-core writes the file asynchronously and may still be flushing
    when run.finish() returns, so first shut the service down: wandb.teardown() returns once the wandb-core
    process has exited, its files closed (no polling, whatever the machine's speed). The next
    wandb.init starts a new service."""
    import wandb

    wandb.teardown()
    records = wandb_records(path)
    assert of_kind(records, "exit"), f"{path} has no exit record after the W&B service shut down"
    return records


def history(records) -> dict[int, dict]:
    """step -> {key: value} of the history records."""
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in r.history.item}
            out[r.history.step.num] = items
    return out


def of_kind(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb imported, offline, every file under tmp_path: no network, no login."""
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'softpick[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_env_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return wandb


def run_files(parent, run_id):
    """The run's .wandb files; a resumed run started within the same second gets a '-1' suffixed folder."""
    return sorted((parent / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))


def test_wandb_offline_run_holds_the_logged_history(tiny_config, tiny_data_dir, tmp_path, wandb_offline):
    tiny_config["train"]["wandb"] = {"project": "softpick-test", "mode": "offline"}
    out = tmp_path / "models" / "softpick"
    summary = train(tiny_config, "softpick", tiny_data_dir, out)

    run_id = (out.parent / "softpick.checkpoints" / WANDB_ID_FILE).read_text().strip()
    files = run_files(out.parent, run_id)  # dir= is the model's parent folder
    assert len(files) == 1, list((out.parent / "wandb").iterdir())
    records = finished_records(files[0])
    run = of_kind(records, "run")[0]
    assert run.project == "softpick-test" and run.display_name == f"{tiny_config['run_name']}-softpick"
    assert json.loads(next(u.value_json for u in run.config.update if u.key == "train"))["wandb"]["mode"] == "offline"

    logged = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    hist = history(records)
    assert sorted(hist) == [r["step"] for r in logged] == list(range(1, 13))
    for r in logged:  # every numeric field, at its step
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens", "peak_mem_gib"):
            assert hist[r["step"]][key] == pytest.approx(r[key]), (r["step"], key)
        assert "peak_mem_kind" not in hist[r["step"]]  # strings stay in the JSONL only
    assert [s for s, h in hist.items() if "val_loss" in h] == [r["step"] for r in logged if "val_loss" in r]
    final = {}
    for s in of_kind(records, "summary"):
        final.update({u.key or "/".join(u.nested_key): u.value_json for u in s.update})
    assert json.loads(final["final_loss"]) == pytest.approx(summary["final_loss"])
    assert [e.exit_code for e in of_kind(records, "exit")] == [0]


def test_resumed_training_continues_the_same_wandb_run(tiny_config, tiny_data_dir, tmp_path, wandb_offline):
    tiny_config["train"]["wandb"] = {"project": "softpick-test", "mode": "offline", "name": "resume-me"}
    out = tmp_path / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, out, stop_after=5)  # last checkpoint: step 3
    id_file = tmp_path / "softmax.checkpoints" / WANDB_ID_FILE
    run_id = id_file.read_text().strip()
    train(tiny_config, "softmax", tiny_data_dir, out)
    assert id_file.read_text().strip() == run_id
    first, second = sorted((finished_records(f) for f in run_files(tmp_path, run_id)), key=lambda r: min(history(r)))
    assert sorted(history(first)) == [1, 2, 3, 4, 5]
    assert sorted(history(second)) == list(range(4, 13))  # from the checkpoint on, same run id
    assert of_kind(second, "run")[0].run_id == run_id and of_kind(second, "run")[0].display_name == "resume-me"

    # a fresh training (no checkpoints) starts a new W&B run
    fresh = tmp_path / "fresh" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, fresh)
    assert (fresh.parent / "softmax.checkpoints" / WANDB_ID_FILE).read_text().strip() != run_id


def test_failed_training_finishes_the_wandb_run_with_an_error_code(tiny_config, tiny_data_dir, tmp_path,
                                                                    wandb_offline):
    from softpick.train import NonFiniteError

    tiny_config["train"].update(lr=1e30, max_consecutive_skips=2, grad_clip=None,
                                wandb={"project": "softpick-test", "mode": "offline"})
    with pytest.raises(NonFiniteError):
        train(tiny_config, "softmax", tiny_data_dir, tmp_path / "m")
    run_id = (tmp_path / "m.checkpoints" / WANDB_ID_FILE).read_text().strip()
    (path,) = run_files(tmp_path, run_id)
    assert [e.exit_code for e in of_kind(finished_records(path), "exit")] == [1]


def test_missing_wandb_is_a_clear_config_error(tiny_config, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    tiny_config["train"]["wandb"] = {"project": "softpick-test", "mode": "offline"}
    with pytest.raises(ConfigError, match=r"train\.wandb.*pip install wandb"):
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")
    assert not (tmp_path / "m.train_log.jsonl").exists()  # refused before any work


@pytest.mark.parametrize("wcfg, key", [
    ({"mode": "offline"}, r"train\.wandb\.project"),
    ({"project": "p", "mode": "sometimes"}, r"train\.wandb\.mode"),
    ({"project": "p", "team": "x"}, r"train\.wandb.*unknown keys \['team'\]"),
    ("softpick-test", r"train\.wandb"),
])
def test_bad_wandb_settings_name_the_key(tiny_config, tiny_data_dir, tmp_path, wcfg, key):
    tiny_config["train"]["wandb"] = wcfg
    with pytest.raises(ConfigError, match=key):
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")

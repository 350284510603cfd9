"""Checkpoint reader/writer: bit-exact round trips, HF layout, atomic writes, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader, ShardedWriter, parse_size


def _tensors(dtype):
    gen = torch.Generator().manual_seed(0)
    return {f"t{i}": torch.randn(37, 11 + i, generator=gen).to(dtype) for i in range(6)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shard_bytes", [10**9, 2000])
def test_round_trip_bit_exact(tmp_path, dtype, shard_bytes):
    tensors = _tensors(dtype)
    with ShardedWriter(tmp_path / "out", max_shard_bytes=shard_bytes, config={"a": 1}) as w:
        for name, t in tensors.items():
            w.add(name, t)
    files = sorted(os.listdir(tmp_path / "out"))
    if shard_bytes == 2000:
        assert "model.safetensors.index.json" in files
        shards = [f for f in files if f.startswith("model-")]
        n = len(shards)
        assert n > 1 and shards == [
            f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)
        ]
    else:
        assert "model.safetensors" in files
    with CheckpointReader(tmp_path / "out") as r:
        assert r.names == list(tensors)
        for name, t in tensors.items():
            got = r.get(name)
            assert got.dtype == dtype
            assert torch.equal(got.view(torch.uint8), t.view(torch.uint8))
            assert r.meta(name) == (dtype, tuple(t.shape))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sharded_copy_loads_and_generates(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with (
        CheckpointReader(tiny_base) as r,
        ShardedWriter(
            tmp_path / "copy", source_dir=tiny_base, max_shard_bytes="30KB", dtype="bfloat16"
        ) as w,
    ):
        for name, t in r.iter_tensors():
            w.add(name, t)
    out = tmp_path / "copy"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    config = json.loads((out / "config.json").read_text())
    original = json.loads((tiny_base / "config.json").read_text())
    assert config.pop("dtype", config.pop("torch_dtype", None)) == "bfloat16"
    original.pop("dtype", None), original.pop("torch_dtype", None)
    assert config == original
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("the ledger", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 4
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), base.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2.to(torch.bfloat16))


def test_config_copied_verbatim_without_dtype_change(tiny_base, tmp_path):
    with CheckpointReader(tiny_base) as r, ShardedWriter(tmp_path / "o", source_dir=tiny_base) as w:
        for name, t in r.iter_tensors():
            w.add(name, t)
    src = (tiny_base / "config.json").read_bytes()
    assert (tmp_path / "o" / "config.json").read_bytes() == src
    assert (tmp_path / "o" / "tokenizer.json").read_bytes() == (
        tiny_base / "tokenizer.json"
    ).read_bytes()


def test_existing_target_refused_without_force(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        ShardedWriter(tmp_path / "o")
    w = ShardedWriter(tmp_path / "o", force=True, config={})
    w.add("a", torch.ones(3))
    w.close()
    assert sorted(os.listdir(tmp_path / "o")) == ["config.json", "model.safetensors"]


def test_error_inside_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ShardedWriter(tmp_path / "o", max_shard_bytes=10) as w:
        w.add("a", torch.ones(30))
        w.add("b", torch.ones(30))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


_KILL_SCRIPT = """
import sys, time, torch
from spear_mm.io.checkpoint import ShardedWriter
with ShardedWriter(sys.argv[1], max_shard_bytes=4_000_000, config={{}}) as w:
    for i in range(40):
        w.add(f"t{{i}}", torch.full((1_000_000,), float(i)))
        if i == {pause}:
            print("ready", flush=True)
            time.sleep(30)
"""


def test_sigkill_mid_write_leaves_no_target_and_rerun_cleans(tmp_path):
    target = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT.format(pause=20), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert leftovers, "the killed writer's temp folder should be there until the next run"
    subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT.format(pause=-1), str(target)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with CheckpointReader(target) as r:
        assert len(r) == 40 and float(r.get("t39")[0]) == 39.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_pickle_refused_unless_opted_in(tmp_path):
    folder = tmp_path / "pk"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    torch.save({"w": torch.arange(4.0)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickle"):
        CheckpointReader(folder)
    with CheckpointReader(folder, allow_pickle=True) as r:
        assert torch.equal(r.get("w"), torch.arange(4.0))


def test_corrupt_truncated_and_missing_shards(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"a": torch.ones(1000)}, str(folder / "model.safetensors"))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        CheckpointReader(folder).get("a")
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="missing"):
        CheckpointReader(folder)
    index = {"weight_map": {"a": "../escape.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="plain file name"):
        CheckpointReader(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        CheckpointReader(tmp_path / "nope")
    with pytest.raises(UserError, match="config.json"):
        CheckpointReader(tmp_path)


def test_parse_size():
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234
    with pytest.raises(UserError):
        parse_size("lots")

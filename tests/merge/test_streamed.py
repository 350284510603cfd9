"""The block-streamed merge (merge.streamed / merge.blockwise) writes the same bytes as the
whole-tensor path for every method, copy, dtype rule and vocabulary growth, and never maps or
writes more than one block of a tensor at a time."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from spear_mm.io import direct
from spear_mm.io.checkpoint import ShardedWriter
from spear_mm.io.planned import PlannedWriter
from spear_mm.merge import executor, streamed
from spear_mm.merge.executor import REPORT_FILE, run_merge
from spear_mm.merge.recipe import load_recipe

HIDDEN, VOCAB, GROWN, INTER = 1536, 1000, 1100, 1000
BLOCK = 1 << 20  # streamed.IO_BLOCK in these tests: the big tensors take 2-5 blocks


def _shapes(vocab: int) -> list[tuple[str, tuple]]:
    p = "model.layers.0."
    return [
        ("model.embed_tokens.weight", (vocab, HIDDEN)),
        (p + "self_attn.q_proj.weight", (2048, HIDDEN)),
        (p + "self_attn.k_proj.weight", (256, HIDDEN)),
        (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
        (p + "mlp.up_proj.weight", (5000, HIDDEN)),
        (p + "input_layernorm.weight", (HIDDEN,)),
        (p + "self_attn.counts", (7,)),
        ("model.norm.weight", (HIDDEN,)),
        ("lm_head.weight", (vocab, HIDDEN)),
    ]


def _write_model(folder, seed: int, noise: float, vocab: int, dtype) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
    }
    with ShardedWriter(folder, max_shard_bytes="9MB", config=config) as w:
        for i, (name, shape) in enumerate(_shapes(vocab)):
            if name.endswith("counts"):
                w.add(name, torch.arange(7, dtype=torch.int64))
                continue
            g = torch.Generator().manual_seed(i)
            x = 0.02 * torch.randn(shape, generator=g) + (1.0 if len(shape) == 1 else 0.0)
            noisy = torch.randn(shape, generator=torch.Generator().manual_seed(100 * seed + i))
            noisy *= noise * float(x.std())
            if noise > 0.02 and "q_proj" in name:  # first block nearly equal, the rest far:
                noisy[:700] *= 0.02  # the first block predicts LERP, the tensor takes SLERP
            if noise > 0.02 and "up_proj" in name:  # and the other way round
                noisy[683:] *= 0.02
                noisy[:683] *= 0.6
            w.add(name, (x + noisy).to(dtype))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    _write_model(root / "base", 0, 0.0, VOCAB, torch.bfloat16)
    _write_model(root / "near", 1, 0.01, GROWN, torch.bfloat16)  # cos ≈ 0.99995: LERP path
    _write_model(root / "far", 2, 0.05, GROWN, torch.bfloat16)  # cos ≈ 0.9988: SLERP path
    _write_model(root / "far32", 2, 0.05, VOCAB, torch.float32)
    return root


def _mergekit(root, adapted: str, method: str, dtype: str | None) -> dict:
    recipe = {
        "merge_method": method,
        "base_model": str(root / "base"),
        "slices": [
            {
                "sources": [
                    {"model": str(root / "base"), "layer_range": [0, 1]},
                    {"model": str(root / adapted), "layer_range": [0, 1]},
                ]
            }
        ],
        "parameters": {"t": [{"filter": "mlp", "value": 0.3}, {"value": 0.6}]},
    }
    if method == "linear":
        recipe["slices"][0]["sources"][0]["parameters"] = {"weight": 0.7}
        recipe["slices"][0]["sources"][1]["parameters"] = {"weight": 0.4}
        del recipe["parameters"]
    if dtype:
        recipe["dtype"] = dtype
    return recipe


def _native(root, adapted: str, method: str) -> dict:
    return {
        "base": str(root / "base"),
        "adapted": str(root / adapted),
        "method": method,
        "default": 0.35,
        "rules": [
            {"kinds": "embeddings", "action": "freeze"},
            {"kinds": "norm", "action": "keep"},
            {"kinds": "lm_head", "t": 0.8},
        ],
    }


CASES = {
    "mergekit-slerp-near": lambda r: _mergekit(r, "near", "slerp", "bfloat16"),
    "mergekit-slerp-far": lambda r: _mergekit(r, "far", "slerp", "bfloat16"),
    "mergekit-slerp-far-fp32-compute": lambda r: _mergekit(r, "far", "slerp", "float32"),
    "mergekit-linear-far": lambda r: _mergekit(r, "far", "linear", None),
    "native-slerp-far": lambda r: _native(r, "far", "slerp"),
    "native-slerp-near": lambda r: _native(r, "near", "slerp"),
    "native-lerp-far": lambda r: _native(r, "far", "lerp"),
    "native-rowwise-far": lambda r: _native(r, "far", "slerp_rowwise"),
    "native-slerp-fp32": lambda r: dict(_native(r, "far32", "slerp"), dtype="bfloat16"),
}


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_files_equal_whole_tensor_files(tmp_path, models, monkeypatch, case):
    _compare(tmp_path, models, monkeypatch, case, BLOCK)


@pytest.mark.parametrize("case", ["mergekit-slerp-far", "native-slerp-near"])
def test_streamed_files_equal_with_the_default_block(tmp_path, models, monkeypatch, case):
    _compare(tmp_path, models, monkeypatch, case, streamed.IO_BLOCK)  # every tensor: one block


def _compare(tmp_path, models, monkeypatch, case: str, block: int) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(CASES[case](models), sort_keys=False))
    recipe = load_recipe(path)
    monkeypatch.setattr(streamed, "IO_BLOCK", block)
    run_merge(recipe, tmp_path / "streamed", progress=False, threads=2, shard_size="8MB")
    with monkeypatch.context() as m:
        m.setattr(executor, "_streamable", lambda *a: False)  # today's whole-tensor path
        run_merge(recipe, tmp_path / "whole", progress=False, threads=2, shard_size="8MB")
    got, want = _files(tmp_path / "streamed"), _files(tmp_path / "whole")
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    report = json.loads((tmp_path / "streamed" / REPORT_FILE).read_text())
    paths = report["summary"]["paths"]
    if "far" in case and "linear" not in case and "lerp" not in case:
        assert paths.get("slerp"), paths  # the pair really takes the SLERP path
    if "near" in case:
        assert not paths.get("slerp"), paths
    by_name = report["tensors"]
    if case in ("mergekit-slerp-far", "native-slerp-far"):  # both mispredictions happened
        assert by_name["model.layers.0.self_attn.q_proj.weight"]["path"] == "slerp"
        assert by_name["model.layers.0.mlp.up_proj.weight"]["path"] == "lerp"


def test_no_tensor_is_read_or_written_whole(tmp_path, models, monkeypatch):
    """A tensor larger than the block is only ever mapped and written a block at a time."""
    mapped, written = [], []
    real_map, real_write = direct.TensorFile.map, PlannedWriter.write_at

    def spy_map(self, name, lo, hi):
        mapped.append((name, hi - lo))
        return real_map(self, name, lo, hi)

    def spy_write(self, name, start, data):
        written.append((name, data.numel() * data.element_size()))
        return real_write(self, name, start, data)

    def no_whole_read(*a, **k):
        raise AssertionError("a tensor was read whole")

    monkeypatch.setattr(streamed, "IO_BLOCK", BLOCK)
    monkeypatch.setattr(direct.TensorFile, "map", spy_map)
    monkeypatch.setattr(direct.TensorFile, "read", no_whole_read)
    monkeypatch.setattr(PlannedWriter, "write_at", spy_write)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_mergekit(models, "far", "slerp", "bfloat16")))
    run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    q = "model.layers.0.self_attn.q_proj.weight"
    tensor_bytes = 2048 * HIDDEN * 2
    assert tensor_bytes > 2 * BLOCK * 2
    assert max(n for name, n in mapped if name == q) == BLOCK * 2
    assert max(n for _, n in mapped) <= BLOCK * 2
    assert max(n for _, n in written) <= BLOCK * 2
    assert sum(n for name, n in written if name == q) >= tensor_bytes  # it was all written


def test_mergekit_cosine_in_parts_equals_whole():
    """The chunk norms, their norm and the chunk dot products (the passes of a streamed
    mergekit-rounded SLERP) give mergekit_cosine's bits."""
    from spear_mm.merge import kernels as K

    g = torch.Generator().manual_seed(0)
    a = torch.randn(5 * (1 << 19) + 777, generator=g).to(torch.bfloat16)
    b = (a.float() + 0.05 * torch.randn(a.shape, generator=g)).to(torch.bfloat16)
    half = 2 * (1 << 20)  # two spans starting on multiples of the chunk
    na = K.mk_norm(
        K.mk_norm_parts(a[:half], torch.float32) + K.mk_norm_parts(a[half:], torch.float32)
    )
    nb = K.mk_norm(
        K.mk_norm_parts(b[:half], torch.float32) + K.mk_norm_parts(b[half:], torch.float32)
    )
    parts = K.mk_dot_parts(a[:half], b[:half], na, nb, torch.float32)
    parts += K.mk_dot_parts(a[half:], b[half:], na, nb, torch.float32)
    assert K.mk_dot(parts) == K.mergekit_cosine(a, b)


def _edited_copy(src, dst, name: str, edit) -> None:
    """Copy the model folder src to dst with tensor `name` replaced by edit(tensor), in place."""
    import shutil

    from spear_mm.io.direct import read_entries

    shutil.copytree(src, dst)
    shard = next(p for p in dst.glob("*.safetensors") if name in read_entries(p))
    entry = read_entries(shard)[name]
    with open(shard, "r+b") as fh:
        fh.seek(entry.begin)
        raw = torch.frombuffer(bytearray(fh.read(entry.nbytes)), dtype=torch.uint8)
        fh.seek(entry.begin)
        fh.write(edit(raw.view(entry.dtype)).to(entry.dtype).view(torch.uint8).numpy())


def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x[-1] = float("nan")
    return x


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"kinds": "embeddings", "action": "freeze"}], "base checkpoint's values contain NaN"),
        ([{"kinds": "embeddings", "t": 0.5}], "merged values contain NaN"),
    ],
)
def test_nan_in_a_late_block_is_an_error_and_writes_nothing(tmp_path, models, rules, message):
    from spear_mm.errors import UserError

    base = tmp_path / "base"  # a NaN in the last block of the embedding
    _edited_copy(models / "base", base, "model.embed_tokens.weight", _with_nan)
    recipe = dict(_native(models, "near", "lerp"), base=str(base), rules=rules)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(UserError, match=message):
        run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "case", ["native-lerp-far", "native-slerp-far", "mergekit-slerp-near", "mergekit-slerp-far"]
)
def test_an_output_that_overflows_its_dtype_is_an_error(tmp_path, models, case):
    """Finite inputs whose merge overflows float16: caught on every kernel path, although the
    passes the norms prove finite skip the block check (`merge.blockwise`, `_bounded`): here
    the norms prove nothing, so a pass written unchecked is written again, checked."""
    from spear_mm.errors import UserError

    q = "model.layers.0.self_attn.q_proj.weight"
    adapted = "far" if case.endswith("far") else "near"
    _edited_copy(models / "base", tmp_path / "base", q, lambda x: x * 1e7)
    _edited_copy(models / adapted, tmp_path / adapted, q, lambda x: x * 1e7)
    recipe = CASES[case](tmp_path)
    recipe["dtype"] = "float16"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(UserError, match=f"tensor {q}: the merged values contain NaN or Inf"):
        run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case", ["native-slerp-far", "native-slerp-near", "mergekit-slerp-near", "mergekit-slerp-far"]
)
def test_a_nan_input_on_any_slerp_path_is_an_error(tmp_path, models, case):
    """One NaN in the base's attention matrix: every SLERP path (predicted LERP or not, native
    or mergekit rounding) reports it, though its passes skip the block check when proven."""
    from spear_mm.errors import UserError

    q = "model.layers.0.self_attn.q_proj.weight"
    _edited_copy(models / "base", tmp_path / "base", q, _with_nan)
    adapted = "far" if case.endswith("far") else "near"
    recipe = CASES[case](models)
    if case.startswith("mergekit"):
        recipe["base_model"] = str(tmp_path / "base")
        recipe["slices"][0]["sources"][0]["model"] = str(tmp_path / "base")
    else:
        recipe["base"] = str(tmp_path / "base")
    assert adapted in str(recipe)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(UserError, match=f"tensor {q}: the merged values contain NaN or Inf"):
        run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["mergekit-slerp-far", "mergekit-slerp-near", "native-lerp-far"])
def test_blocks_the_norms_prove_finite_skip_the_check(tmp_path, models, monkeypatch, case):
    """Every block of a kernel-path tensor is written unchecked (its norms bound it), every
    copied block is checked; the files are the whole-tensor path's, which checks everything."""
    seen: dict[str, set[bool]] = {}
    real_commit = streamed.SpanWriter.commit

    def spy_commit(self, lo, hi):
        seen.setdefault(self.name, set()).add(self.verify)
        return real_commit(self, lo, hi)

    monkeypatch.setattr(streamed.SpanWriter, "commit", spy_commit)
    _compare(tmp_path, models, monkeypatch, case, BLOCK)
    report = json.loads((tmp_path / "streamed" / REPORT_FILE).read_text())
    for name, entry in report["tensors"].items():
        if entry["path"] == "copy":  # integer tensors are copied as bytes, never checked
            assert seen[name] == {"float" in entry["dtype"]}, name
        elif not entry.get("new_rows"):
            assert seen[name] == {False}, name
    assert any(e["path"] != "copy" for e in report["tensors"].values())


def test_slow_writes_never_see_a_reused_buffer(tmp_path, models, monkeypatch):
    """Blocks are written behind the next block's compute: with every write delayed, a buffer
    reused before its write finished would change the file. The bytes still equal the
    whole-tensor path's."""
    import time

    real_write = PlannedWriter.write_at

    def slow_write(self, name, start, data):
        time.sleep(0.002)
        return real_write(self, name, start, data)

    monkeypatch.setattr(PlannedWriter, "write_at", slow_write)
    _compare(tmp_path, models, monkeypatch, "mergekit-slerp-far", BLOCK)


def test_a_failed_block_write_fails_the_merge_and_leaves_nothing(tmp_path, models, monkeypatch):
    """An error in a write in flight (here the third block of a tensor) reaches the caller,
    and the output folder is never created."""
    import errno
    import os

    from spear_mm.errors import UserError
    from spear_mm.io.runlock import disk_errors

    real_write = PlannedWriter.write_at
    calls = []

    def failing_write(self, name, start, data):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return real_write(self, name, start, data)

    monkeypatch.setattr(streamed, "IO_BLOCK", BLOCK)
    monkeypatch.setattr(PlannedWriter, "write_at", failing_write)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_mergekit(models, "far", "slerp", "bfloat16")))
    with (
        pytest.raises(UserError, match="no space left on the device"),
        disk_errors(tmp_path / "out"),
    ):
        run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.yaml"]


def test_async_writes_land_before_close(tmp_path):
    """PlannedWriter.write_at_async: every block is in the file once close returns, and a bad
    range raises from the future."""
    from safetensors.torch import load_file

    x = torch.arange(3 * 4096, dtype=torch.float32)
    with PlannedWriter(tmp_path / "out", [("x", torch.float32, (3 * 4096,))]) as w:
        futs = [w.write_at_async("x", i * 16384, x[i * 4096 : (i + 1) * 4096]) for i in range(3)]
        with pytest.raises(RuntimeError, match="outside the plan"):
            w.write_at_async("x", 3 * 16384, x[:4096]).result()
        w.mark_written("x")
    assert all(f.done() for f in futs)
    (shard,) = (tmp_path / "out").glob("*.safetensors")
    assert torch.equal(load_file(shard)["x"], x)


def test_a_one_span_tensor_is_mapped_once_for_all_its_passes(tmp_path, models, monkeypatch):
    """SLERP on the SLERP path reads a tensor three times (mergekit's norms, its dot products,
    the combine); a tensor that fits in one span keeps that span mapped between the passes."""
    mapped = []
    real_map = direct.TensorFile.map

    def spy_map(self, name, lo, hi):
        mapped.append(name)
        return real_map(self, name, lo, hi)

    monkeypatch.setattr(streamed, "IO_BLOCK", BLOCK)
    monkeypatch.setattr(direct.TensorFile, "map", spy_map)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_mergekit(models, "far", "slerp", "bfloat16")))
    run_merge(load_recipe(path), tmp_path / "out", progress=False, threads=2)
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    k = "model.layers.0.self_attn.k_proj.weight"  # 256 x 1536: one span
    assert report["tensors"][k]["path"] == "slerp"
    assert mapped.count(k) == 2  # base and adapted, once each

import pytest

from spear_mm.errors import UserError
from spear_mm.io.sources import load_model, resolve_model


def test_local_folder(tiny_base):
    assert resolve_model(str(tiny_base)) == tiny_base
    model, tok = load_model(str(tiny_base))
    assert model.config.num_hidden_layers == 4 and tok.eos_token


def test_hub_id_offline_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="cannot download model 'meta-llama/Llama-3.1-8B'") as err:
        resolve_model("meta-llama/Llama-3.1-8B")
    assert "\n" not in str(err.value)


def test_unknown_spec():
    with pytest.raises(UserError, match="not an existing folder"):
        resolve_model("./no/such/folder")


def test_builtin_tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEAR_MM_HOME", str(tmp_path))
    folder = resolve_model("tiny-llama")
    assert folder == tmp_path / "tiny-llama" and (folder / "model.safetensors").is_file()
    assert resolve_model("tiny-llama") == folder  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny-llama.tmp")] == []


@pytest.mark.slow
def test_builtin_smollm2_loads_and_generates():
    model, tok = load_model("smollm2-135m")
    assert model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tok("The balance sheet of a company lists", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids.shape[1] :])
    assert len(text.strip()) > 0

"""Native and mergekit recipes: selection, precedence, gradients, filters, errors, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spear_mm.errors import UserError
from spear_mm.merge.mergekit_compat import export_mergekit
from spear_mm.merge.recipe import load_recipe, recipe_from_dict

L = 6
LAYER_SUFFIXES = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
]
NAMES = (
    ["model.embed_tokens.weight"]
    + [f"model.layers.{i}.{s}" for i in range(L) for s in LAYER_SUFFIXES]
    + ["model.norm.weight", "lm_head.weight"]
)


def native(**kw):
    return recipe_from_dict({"base": "b", "adapted": "a", **kw})


def plan(recipe):
    return recipe.plan(NAMES, L)


def mergekit_gradient(anchors, pos):
    """Piecewise-linear anchors over [0, 1], written out independently of the code under test."""
    n = len(anchors) - 1
    if n == 0:
        return anchors[0]
    seg = min(int(pos * n), n - 1) if pos < 1 else n - 1
    frac = pos * n - seg
    return anchors[seg] + frac * (anchors[seg + 1] - anchors[seg])


def test_default_keep_and_later_rules_override():
    p = plan(
        native(
            rules=[
                {"kinds": "attention", "t": 0.4},
                {"layers": "2-3", "action": "freeze"},
                {"match": r"layers\.3\.self_attn\.q_proj", "t": 0.9, "method": "lerp"},
            ]
        )
    )
    assert (
        p["model.embed_tokens.weight"].t == 1.0 and p["model.embed_tokens.weight"].rule == "default"
    )
    assert p["model.layers.0.self_attn.k_proj.weight"].t == 0.4
    assert p["model.layers.0.mlp.up_proj.weight"].t == 1.0
    assert p["model.layers.2.self_attn.k_proj.weight"].t == 0.0  # later freeze wins
    assert p["model.layers.2.mlp.up_proj.weight"].rule == "rules[1]"
    q3 = p["model.layers.3.self_attn.q_proj.weight"]
    assert (q3.t, q3.method, q3.rule) == (0.9, "lerp", "rules[2]")
    assert p["model.layers.3.self_attn.k_proj.weight"].method == "slerp"


def test_layer_selectors_and_kinds():
    p = plan(
        native(
            default="freeze",
            rules=[
                {"layers": [0, -1], "kinds": ["mlp_down", "norm"], "t": 0.5},
            ],
        )
    )
    picked = {n for n, x in p.items() if x.t == 0.5}
    expected = {
        f"model.layers.{i}.{s}"
        for i in (0, L - 1)
        for s in (
            "mlp.down_proj.weight",
            "input_layernorm.weight",
            "post_attention_layernorm.weight",
        )
    }
    assert picked == expected  # model.norm is a norm but has no layer: not selected


def test_gradient_over_selected_layers_matches_mergekit_formula():
    anchors = [0.1, 0.8, 0.3]
    p = plan(
        native(
            rules=[
                {"layers": "1-5", "kinds": "mlp", "t": anchors},
                {"kinds": "embeddings", "t": anchors},
            ]
        )
    )
    for k, layer in enumerate(range(1, 6)):
        want = mergekit_gradient(anchors, k / 4)
        assert p[f"model.layers.{layer}.mlp.up_proj.weight"].t == pytest.approx(want, abs=1e-12)
    assert p["model.embed_tokens.weight"].t == 0.1  # outside the blocks: first anchor


def test_default_gradient_spans_all_layers():
    p = plan(native(default=[0.0, 1.0]))
    for i in range(L):
        assert p[f"model.layers.{i}.mlp.up_proj.weight"].t == pytest.approx(i / (L - 1))


def test_unmatched_rule_is_reported():
    r = native(rules=[{"kinds": "lm_head", "action": "freeze"}])
    r.plan([n for n in NAMES if n != "lm_head.weight"], L)
    assert r.unmatched == ["rules[0]"]


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"rules": [{"kinds": "atention", "t": 0.5}]}, "rules[0].kinds", "allowed"),
        ({"rules": [{"t": 1.5}]}, "rules[0].t", "outside [0, 1]"),
        ({"rules": [{"action": "freeze", "t": 0.5}]}, "rules[0]", "remove t"),
        ({"rules": [{"action": "restore"}]}, "rules[0]", "needs t"),
        ({"rules": [{"action": "drop"}]}, "rules[0]", "allowed"),
        ({"rules": [{"layers": "3-1", "t": 0.5}]}, "rules[0].layers", "empty"),
        ({"rules": [{"layers": "x", "t": 0.5}]}, "rules[0].layers", "allowed"),
        ({"rules": [{"match": "(", "t": 0.5}]}, "rules[0].match", "regular expression"),
        ({"method": "nlerp"}, "method", "allowed: lerp, slerp, slerp_rowwise"),
        ({"default": "maybe"}, "default", "allowed keep, freeze"),
        ({"dtype": "float8"}, "dtype", "allowed"),
        ({"rulez": []}, "rulez", "unknown key"),
    ],
)
def test_bad_native_recipes_name_file_and_key(tmp_path, data, key, words):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": "b", "adapted": "a", **data}))
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{key}'" in msg and words in msg and "\n" not in msg


def test_missing_key_and_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("adapted: a\n")
    with pytest.raises(UserError, match="'base': required key is missing"):
        load_recipe(path)
    path.write_text("base: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_layer_out_of_range_at_plan_time():
    with pytest.raises(UserError, match=r"rules\[0\].layers.*0-5"):
        plan(native(rules=[{"layers": 6, "t": 0.5}]))


# -- mergekit ---------------------------------------------------------------------------------
def mk(**kw):
    return recipe_from_dict({"merge_method": "slerp", "base_model": "b", **kw})


def test_mergekit_models_form_gradient_and_filters():
    r = mk(
        models=[{"model": "b"}, {"model": "a"}],
        parameters={
            "t": [
                {"filter": "self_attn", "value": [0.0, 1.0]},
                {"filter": "mlp", "value": 0.3},
                {"value": [0.2, 0.6, 0.4]},
            ]
        },
    )
    assert (r.base, r.adapted) == ("b", "a")
    p = plan(r)
    for i in range(L):
        pos = i / (L - 1)
        assert p[f"model.layers.{i}.self_attn.v_proj.weight"].t == pytest.approx(pos)
        assert p[f"model.layers.{i}.mlp.down_proj.weight"].t == 0.3
        assert p[f"model.layers.{i}.input_layernorm.weight"].t == pytest.approx(
            mergekit_gradient([0.2, 0.6, 0.4], pos)
        )
    # embeddings, final norm and lm_head sit at position 0
    for n in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert p[n].t == 0.2


def test_mergekit_slices_scopes_and_placement():
    r = mk(
        slices=[
            {
                "sources": [
                    {"model": "b", "layer_range": [0, 2]},
                    {"model": "a", "layer_range": [0, 2]},
                ],
                "parameters": {"t": [{"filter": "embed_tokens", "value": 0.05}]},
            },
            {
                "sources": [
                    {"model": "b", "layer_range": [2, 3]},
                    {"model": "a", "layer_range": [2, 3]},
                ],
                "parameters": {"t": [0.1, 0.9]},
            },
            {
                "sources": [
                    {"model": "b", "layer_range": [3, 6]},
                    {"model": "a", "layer_range": [3, 6]},
                ],
                "parameters": {"t": [{"filter": "norm", "value": [0.0, 1.0]}]},
            },
        ],
        parameters={"t": 0.7},
    )
    p = plan(r)
    assert p["model.embed_tokens.weight"].t == 0.05  # first slice's filter
    assert p["model.layers.0.mlp.up_proj.weight"].t == 0.7  # no filter matched → top level
    assert p["model.layers.2.mlp.up_proj.weight"].t == 0.9  # one-layer slice sits at 1
    assert p["model.layers.4.input_layernorm.weight"].t == pytest.approx(0.5)
    assert p["model.norm.weight"].t == 0.0  # last slice, position 0, filter "norm"
    assert p["lm_head.weight"].t == 0.7


def test_mergekit_linear_weights_per_model():
    r = recipe_from_dict(
        {
            "merge_method": "linear",
            "dtype": "bfloat16",
            "models": [
                {
                    "model": "base",
                    "parameters": {"weight": [{"filter": "mlp", "value": 3.0}, {"value": 1.0}]},
                },
                {"model": "cpt", "parameters": {"weight": 1.0}},
            ],
        }
    )
    assert (r.base, r.adapted) == ("base", "cpt")
    p = plan(r)
    up = p["model.layers.1.mlp.up_proj.weight"]
    assert up.method == "linear" and up.weights == (3.0, 1.0) and up.t == 0.25
    assert p["model.layers.1.self_attn.q_proj.weight"].t == 0.5


@pytest.mark.parametrize(
    "data, words",
    [
        (
            {"merge_method": "nuslerp", "base_model": "b", "models": [{"model": "a"}]},
            "allowed: slerp",
        ),
        ({"merge_method": "slerp", "models": [{"model": "a"}, {"model": "b"}]}, "needs base_model"),
        (
            {
                "merge_method": "slerp",
                "base_model": "b",
                "models": [{"model": "a"}, {"model": "c"}],
            },
            "exactly two models",
        ),
        (
            {
                "merge_method": "slerp",
                "base_model": "b",
                "tokenizer_source": "union",
                "models": [{"model": "a"}],
            },
            "'tokenizer_source' is not supported",
        ),
        (
            {
                "merge_method": "slerp",
                "base_model": "b",
                "slices": [
                    {
                        "sources": [
                            {"model": "b", "layer_range": [0, 3]},
                            {"model": "a", "layer_range": [1, 4]},
                        ]
                    }
                ],
            },
            "layer stacking",
        ),
        (
            {"merge_method": "slerp", "base_model": "b", "models": [{"model": "a"}], "foo": 1},
            "'foo': unknown key",
        ),
    ],
)
def test_bad_mergekit_recipes(data, words):
    with pytest.raises(UserError, match=words):
        recipe_from_dict(data)


def test_mergekit_missing_t_names_tensor():
    r = mk(models=[{"model": "a"}], parameters={"t": [{"filter": "mlp", "value": 0.5}]})
    with pytest.raises(UserError, match="no value of parameter t for tensor model.embed_tokens"):
        plan(r)


def test_mergekit_slices_must_cover_model():
    r = mk(
        slices=[
            {
                "sources": [
                    {"model": "b", "layer_range": [0, 4]},
                    {"model": "a", "layer_range": [0, 4]},
                ]
            }
        ],
        parameters={"t": 0.5},
    )
    with pytest.raises(UserError, match="cover layers 0-3"):
        plan(r)


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_export_round_trip_gives_same_plan(method):
    r = native(
        method=method,
        default=[0.9, 0.4],
        rules=[
            {"kinds": "attention", "layers": "1-3", "t": [0.2, 0.6]},
            {"kinds": "embeddings", "action": "freeze"},
            {"kinds": "norm", "t": 0.75},
        ],
    )
    text = export_mergekit(r, NAMES, L, "bfloat16")
    back = recipe_from_dict(yaml.safe_load(text))
    want, got = plan(r), plan(back)
    for n in NAMES:
        assert got[n].t == pytest.approx(want[n].t, abs=1e-12), n
    assert back.out_dtype is not None and str(back.out_dtype) == "torch.bfloat16"


def test_export_refuses_rowwise():
    r = native(method="slerp_rowwise", default=0.5)
    with pytest.raises(UserError, match="cannot export"):
        export_mergekit(r, NAMES, L, "float32")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("recipes/*.yaml")))
def test_example_recipes_parse_and_plan(path):
    recipe = load_recipe(path)  # the examples are written for SmolLM2-135M: 30 layers
    names = [f"model.layers.{i}.{s}" for i in range(30) for s in LAYER_SUFFIXES]
    plans = recipe.plan(["model.embed_tokens.weight", *names, "model.norm.weight"], 30)
    assert all(0.0 <= p.t <= 1.0 for p in plans.values())

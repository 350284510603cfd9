from spear_mm.io.archmap import classify, is_tied, num_layers


def test_llama_names():
    cases = {
        "model.layers.0.self_attn.q_proj.weight": (0, "attn_q", "attention"),
        "model.layers.12.self_attn.k_proj.bias": (12, "attn_k", "attention"),
        "model.layers.3.self_attn.v_proj.weight": (3, "attn_v", "attention"),
        "model.layers.3.self_attn.o_proj.weight": (3, "attn_o", "attention"),
        "model.layers.29.mlp.gate_proj.weight": (29, "mlp_gate", "mlp"),
        "model.layers.29.mlp.up_proj.weight": (29, "mlp_up", "mlp"),
        "model.layers.29.mlp.down_proj.weight": (29, "mlp_down", "mlp"),
        "model.layers.7.input_layernorm.weight": (7, "norm_attn", "norm"),
        "model.layers.7.post_attention_layernorm.weight": (7, "norm_mlp", "norm"),
        "model.norm.weight": (None, "norm_final", "norm"),
        "model.embed_tokens.weight": (None, "embed", "embeddings"),
        "lm_head.weight": (None, "lm_head", "lm_head"),
        "model.layers.1.self_attn.rotary_emb.inv_freq": (1, "other", "other"),
    }
    for name, (layer, kind, group) in cases.items():
        info = classify(name)
        assert (info.layer, info.kind, info.group) == (layer, kind, group), name


def test_tied_and_layers():
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    assert is_tied({}, names)
    assert not is_tied({"tie_word_embeddings": False}, names + ["lm_head.weight"])
    assert num_layers({"num_hidden_layers": 30}) == 30

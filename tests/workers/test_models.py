"""Oracle 1 (forward parity with transformers) and checkpoint loading."""
import json
import shutil

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from workers.models import ForwardBatch, ModelLoadError, load_config, load_model
from workers.models.loader import weight_files
from workers.models.tiny import make_tiny_checkpoint


def hf_model(path, cfg):
    """transformers' Qwen3ForCausalLM with the checkpoint's weights (config rebuilt: sdar is unknown to HF)."""
    hf_cfg = Qwen3Config(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                         num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                         head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
                         tie_word_embeddings=cfg.tie_word_embeddings, attn_implementation="eager")
    model = Qwen3ForCausalLM(hf_cfg).eval()
    from safetensors.torch import load_file
    state = {}
    for f in weight_files(path):
        state.update(load_file(f))
    model.load_state_dict(state, strict=False)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model


@pytest.mark.parametrize("name", ["target", "ar", "sharded"])
def test_forward_matches_transformers(ckpts, name):
    path = ckpts[name]
    ours = load_model(path, "cpu", "float32")
    ref = hf_model(path, ours.config)
    ids = torch.randint(0, ours.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    n = ids.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()[None].expand(2, n, n)
    positions = torch.arange(n)[None].expand(2, n)
    with torch.no_grad():
        got = ours(ids, ForwardBatch(positions, causal))
        want = ref(ids).logits
    assert (got - want).abs().max().item() < 1e-4


def test_tied_head_and_rope_parameters(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "tied", model_type="qwen3", tie_word_embeddings=True)
    raw = json.loads((path / "config.json").read_text())
    assert "rope_theta" not in raw  # transformers 5 nests it in rope_parameters
    cfg = load_config(path)
    assert cfg.rope_theta == 10000.0 and cfg.tie_word_embeddings
    model = load_model(path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ref = hf_model(path, cfg)
    ids = torch.arange(5)[None]
    vis = torch.ones(5, 5, dtype=torch.bool).tril()[None]
    with torch.no_grad():
        assert (model(ids, ForwardBatch(torch.arange(5)[None], vis)) - ref(ids).logits).abs().max() < 1e-4


def test_published_sdar_config_fields(ckpts):
    cfg = load_config(ckpts["target"])
    raw = json.loads((ckpts["target"] / "config.json").read_text())
    assert raw["model_type"] == "sdar" and "auto_map" in raw and isinstance(raw["rope_theta"], int)
    assert cfg.is_diffusion and cfg.block_size == 4 and cfg.mask_token_id == raw["mask_token_id"]
    assert not cfg.tie_word_embeddings


def test_sharded_checkpoint_has_index(ckpts):
    files = weight_files(ckpts["sharded"])
    assert len(files) > 1 and (ckpts["sharded"] / "model.safetensors.index.json").is_file()


@pytest.mark.parametrize("dtype,expected", [("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                            ("auto", torch.float32)])
def test_dtypes(ckpts, dtype, expected):
    assert next(load_model(ckpts["target"], "cpu", dtype).parameters()).dtype == expected


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def edited_copy(src, dst, filename: str, edit) -> None:
    """Copy a checkpoint and rewrite one of its JSON files with ``edit(dict)``."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / filename).read_text())
    edit(raw)
    (dst / filename).write_text(json.dumps(raw))


def test_unknown_model_type(ckpts, tmp_path):
    edited_copy(ckpts["target"], tmp_path / "llama", "config.json", lambda raw: raw.update(model_type="llama"))
    with pytest.raises(ModelLoadError, match="unsupported model_type 'llama'"):
        load_model(tmp_path / "llama")


def test_pickle_weights_refused(ckpts, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(ckpts["target"], bad)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only safetensors"):
        load_model(bad)


def test_index_cannot_escape_directory(ckpts, tmp_path):
    def escape(index):
        index["weight_map"][next(iter(index["weight_map"]))] = "../../etc/passwd"

    edited_copy(ckpts["sharded"], tmp_path / "escape", "model.safetensors.index.json", escape)
    with pytest.raises(ModelLoadError, match="escapes"):
        load_model(tmp_path / "escape")


def test_missing_mask_token(ckpts, tmp_path):
    edited_copy(ckpts["target"], tmp_path / "nomask", "config.json", lambda raw: raw.pop("mask_token_id"))
    with pytest.raises(ModelLoadError, match="mask_token_id"):
        load_model(tmp_path / "nomask")

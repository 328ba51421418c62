"""SDAR-MoE (Qwen3-MoE layers): config, loading into stacked experts, forward parity with
transformers' Qwen3MoeForCausalLM, the expert implementations, and the decoding oracles with a
MoE target."""
import json
import shutil
import weakref

import pytest
import torch
from safetensors import safe_open
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from workers.api import DecodeConfig
from jobs.bench.shapes import shape_config
from workers.engine import Engine
from workers.models import ModelLoadError, load_config, load_model, loader, parse_config
from workers.models.moe import MoE, experts_blocked, experts_reference, route
from workers.models.moe_grouping import align_by_expert
from workers.models.tiny import make_tiny_moe_checkpoint

from . import reference
from .test_models import edited_copy
from .test_simsd import PROMPTS as SIMSD_PROMPTS, engine as simsd_engine, run as simsd_run
from .test_vanilla import PROMPTS as VANILLA_PROMPTS, run as vanilla_run


def hf_moe(path, cfg):
    """transformers' own model from the checkpoint's weights (the config is rebuilt: sdar_moe is
    unknown to transformers; from_pretrained maps the per-expert names itself)."""
    hf_cfg = Qwen3MoeConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, num_experts=cfg.num_experts, num_experts_per_tok=cfg.num_experts_per_tok,
        moe_intermediate_size=cfg.moe_intermediate_size, norm_topk_prob=cfg.norm_topk_prob,
        decoder_sparse_step=cfg.decoder_sparse_step, mlp_only_layers=list(cfg.mlp_only_layers),
        tie_word_embeddings=False)
    hf_cfg._attn_implementation = "eager"
    return Qwen3MoeForCausalLM.from_pretrained(path, config=hf_cfg).eval()


# --- config ---------------------------------------------------------------------------------------

def test_sdar_moe_config_fields(ckpts):
    raw = json.loads((ckpts["moe"] / "config.json").read_text())
    assert raw["architectures"] == ["SDARMoeForCausalLM"] and raw["model_type"] == "sdar_moe"
    cfg = load_config(ckpts["moe"])
    assert cfg.is_diffusion and cfg.block_size == 4 and cfg.mask_token_id == raw["mask_token_id"]
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size) == (8, 2, 32)
    assert cfg.norm_topk_prob and cfg.mlp_only_layers == (1,)
    assert [cfg.is_moe_layer(i) for i in range(2)] == [True, False]


def test_moe_layer_rule_and_transformers_spelling():
    raw = {"model_type": "qwen3_moe", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
           "num_hidden_layers": 6, "num_attention_heads": 2, "num_local_experts": 4,  # transformers 5
           "num_experts_per_tok": 2, "moe_intermediate_size": 4, "decoder_sparse_step": 2,
           "mlp_only_layers": [3]}
    cfg = parse_config(raw)
    assert not cfg.is_diffusion and cfg.num_experts == 4
    assert [i for i in range(6) if cfg.is_moe_layer(i)] == [1, 5]  # (i + 1) % 2 == 0, not layer 3


@pytest.mark.parametrize("edit,match", [
    (dict(architectures=["SDARForCausalLM"]), "does not match architectures"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok 9"),
    (dict(num_experts=None), "needs num_experts"),
])
def test_bad_moe_configs(ckpts, tmp_path, edit, match):
    edited_copy(ckpts["moe"], tmp_path / "bad", "config.json", lambda raw: raw.update(edit))
    with pytest.raises(ModelLoadError, match=match):
        load_model(tmp_path / "bad")


def test_30b_a3b_shape_parameter_counts():
    """The published 30B-A3B shape: about 30.5B parameters, 3.3B read per token."""
    cfg = shape_config("sdar-30b-a3b")
    assert cfg.num_moe_layers == 48 and cfg.num_experts == 128 and cfg.num_experts_per_tok == 8
    assert 30.3e9 < cfg.num_params < 30.7e9
    assert 3.2e9 < cfg.num_active_params < 3.5e9


# --- loading ---------------------------------------------------------------------------------------

def test_experts_load_into_stacked_weights(ckpts):
    model = load_model(ckpts["moe"], "cpu", "float32")
    moe = model.model.layers[0].mlp
    assert isinstance(moe, MoE) and not isinstance(model.model.layers[1].mlp, MoE)
    inter = load_config(ckpts["moe"]).moe_intermediate_size
    with safe_open(str(ckpts["moe"] / "model.safetensors"), "pt") as f:
        for e in (0, 5, 7):
            p = f"model.layers.0.mlp.experts.{e}."
            assert torch.equal(moe.experts.gate_up_proj[e, :inter], f.get_tensor(p + "gate_proj.weight"))
            assert torch.equal(moe.experts.gate_up_proj[e, inter:], f.get_tensor(p + "up_proj.weight"))
            assert torch.equal(moe.experts.down_proj[e], f.get_tensor(p + "down_proj.weight"))
        assert torch.equal(moe.gate.weight, f.get_tensor("model.layers.0.mlp.gate.weight"))


def test_missing_expert_weight_is_named(ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "noexpert"
    shutil.copytree(ckpts["moe"], bad)
    state = load_file(bad / "model.safetensors")
    del state["model.layers.0.mlp.experts.3.up_proj.weight"]
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"experts\.3\.up_proj"):
        load_model(bad)


def test_loads_tensor_by_tensor(ckpts, tmp_path, monkeypatch):
    """Shards are read lazily: a bounded number of checkpoint tensors is alive in host memory at
    once (the one being copied and the previous one until its name is rebound), never a shard."""
    path = make_tiny_moe_checkpoint(tmp_path / "sharded_moe", seed=9, num_layers=1)
    alive, peak, count = [0], [0], [0]

    def done():
        alive[0] -= 1

    class Counting:
        def __init__(self, *args, **kwargs):
            self.inner = safe_open(*args, **kwargs)

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_tensor(self, name):
            t = self.f.get_tensor(name)
            alive[0] += 1
            count[0] += 1
            peak[0] = max(peak[0], alive[0])
            weakref.finalize(t, done)
            return t

    monkeypatch.setattr(loader, "safe_open", Counting)
    load_model(path, "cpu", "float32")
    assert count[0] > 20 and peak[0] <= 2


# --- forward parity with transformers --------------------------------------------------------------

@pytest.mark.parametrize("variant", ["fixture", "sparse_step_2_unnormalised"])
def test_forward_matches_transformers(ckpts, tmp_path, variant):
    path = ckpts["moe"] if variant == "fixture" else make_tiny_moe_checkpoint(
        tmp_path / "v", seed=8, num_layers=3, decoder_sparse_step=2, norm_topk_prob=False, top_k=3)
    ours = load_model(path, "cpu", "float32")
    ref = hf_moe(path, ours.config)
    n = 11
    ids = torch.randint(0, ours.config.vocab_size, (n,), generator=torch.Generator().manual_seed(1))
    outs = {}
    for name, vis in [("causal", torch.ones(n, n, dtype=torch.bool).tril()),
                      ("block_causal", torch.tensor(reference.block_causal_mask(n, 4)))]:
        got = reference.forward_full(ours, ids.tolist(), list(range(n)), vis.tolist())
        with torch.no_grad():
            want = ref(ids[None], attention_mask=torch.where(vis, 0.0, float("-inf"))[None, None]).logits[0]
        assert (got - want).abs().max().item() < 1e-4, name
        outs[name] = got
    assert (outs["causal"] - outs["block_causal"]).abs().max() > 1e-2  # the masks really differ


# --- the expert implementations --------------------------------------------------------------------

def random_experts(T, E, k, H=24, I=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g)
    gate_up, down = torch.randn(E, 2 * I, H, generator=g), torch.randn(E, H, I, generator=g)
    weights, ids = route(x, torch.randn(E, H, generator=g), k, True)
    return x, weights, ids, gate_up, down


def test_router_normalisation():
    x = torch.randn(5, 8)
    gate = torch.randn(6, 8)
    w_norm, ids = route(x, gate, 3, True)
    w_raw, ids_raw = route(x, gate, 3, False)
    assert torch.equal(ids, ids_raw)
    assert torch.allclose(w_norm.sum(-1), torch.ones(5))
    assert (w_raw.sum(-1) < 1).all()
    assert torch.allclose(w_raw, torch.softmax(x @ gate.T, -1).gather(1, ids))


@pytest.mark.parametrize("T,E,k,block_m", [(4, 16, 4, 16), (37, 8, 2, 16), (50, 8, 3, 32), (1, 4, 1, 16)])
def test_align_by_expert_layout(T, E, k, block_m):
    _, _, ids, _, _ = random_experts(T, E, k)
    slots, block_expert, used = align_by_expert(ids, E, block_m)
    A = T * k
    real = slots[slots < A]
    assert sorted(real.tolist()) == list(range(A))        # every assignment exactly once
    assert (slots[int(used):] == A).all()                  # nothing past the used rows
    flat = ids.flatten()
    for b in range(int(used) // block_m):
        rows = slots[b * block_m:(b + 1) * block_m]
        rows = rows[rows < A]
        assert (flat[rows.long()] == block_expert[b]).all()  # one expert per row block


@pytest.mark.parametrize("T,E,k,block_m", [(4, 16, 4, 16), (37, 8, 2, 16), (50, 8, 3, 32)])
def test_blocked_experts_equal_reference(T, E, k, block_m):
    args = random_experts(T, E, k, seed=T)
    want = experts_reference(*args)
    got = experts_blocked(*args, block_m=block_m)
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


# --- decoding oracles with the MoE target ----------------------------------------------------------

# Prompt tails of 3, 0, 1 and 2 tokens inside the first block.
PROMPTS = [SIMSD_PROMPTS[i] for i in (0, 2, 3, 5)]

@pytest.mark.parametrize("rule", ["sequential", "static", "dynamic"])
def test_vanilla_equals_full_recompute(ckpts, rule):
    eng = Engine(str(ckpts["moe"]), None, DecodeConfig(remasking=rule, threshold=0.3), "cpu", "float32")
    model = load_model(ckpts["moe"])
    stops = eng.tokenizer.stop_ids
    prompts = VANILLA_PROMPTS[:3]
    for res, prompt in zip(vanilla_run(eng, prompts, max_new=8), prompts):
        want, reason = reference.vanilla(model, prompt, 4, model.config.mask_token_id, 8, stops, rule, 0.3)
        assert res.token_ids == want and res.finish_reason == reason


def test_simsd_paper_equals_no_cache_layout(ckpts):
    eng = simsd_engine(ckpts["moe"], ckpts["draft"], verify="paper", batch_size=4)
    target, draft = load_model(ckpts["moe"]), load_model(ckpts["draft"])
    for res, prompt in zip(simsd_run(eng, PROMPTS, max_new=10), PROMPTS):
        want, reason = reference.simsd_paper(target, draft, prompt, 4, target.config.mask_token_id, 10,
                                             eng.tokenizer.stop_ids)
        assert res.token_ids == want and res.finish_reason == reason


def test_simsd_exact_equals_vanilla_sequential(ckpts):
    want = simsd_run(simsd_engine(ckpts["moe"]), PROMPTS, max_new=10, stops=())
    got = simsd_run(simsd_engine(ckpts["moe"], ckpts["draft"], verify="exact", batch_size=4), PROMPTS,
                    max_new=10, stops=())
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert all(len(r.token_ids) == 10 for r in got)


# --- memory check ----------------------------------------------------------------------------------

def test_30b_a3b_memory_check():
    """Weights plus a batch 64 x 4k KV pool fit one H200 (141 GB) and not one H100 (80 GB)."""
    from workers.models.memory import GIB, fit_error, kv_bytes_per_token, weight_bytes

    cfg = shape_config("sdar-30b-a3b")
    assert kv_bytes_per_token(cfg) == 2 * 48 * 4 * 128 * 2
    assert 56 * GIB < weight_bytes(cfg) < 58 * GIB
    h200, h100 = 141 * 10**9, 80 * 10**9
    assert fit_error(cfg, h200, kv_tokens=64 * 4096) is None
    err = fit_error(cfg, h100, kv_tokens=64 * 4096, name="--target sdar-30b-a3b")
    assert err.startswith("--target sdar-30b-a3b does not fit") and "30.53B parameters" in err
    assert fit_error(cfg, h100, kv_tokens=4096) is None  # a minimal pool does fit an H100


def test_blocked_moe_traces_without_graph_breaks(ckpts):
    """Router, grouping and blocked experts are one graph (no host sync): what CUDA graphs and
    the compiled layer need. The per-expert loop is the CPU path and does sync."""
    model = load_model(ckpts["moe"], "cpu", "float32")
    moe = model.model.layers[0].mlp
    h = torch.randn(3, 4, model.config.hidden_size)
    want = moe(h)
    moe.kernel = "blocked"
    torch._dynamo.reset()
    got = torch.compile(moe, backend="eager", fullgraph=True)(h)
    assert (got - want).abs().max() < 1e-4
    with pytest.raises(ValueError, match="unknown MoE kernel"):
        MoE(model.config, kernel="cuda")

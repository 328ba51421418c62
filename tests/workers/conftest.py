import pytest
import torch

from workers.models.tiny import build_tokenizer, make_tiny_checkpoint, make_tiny_moe_checkpoint

# fp32 everywhere: the oracles compare tokens and logits exactly.
torch.set_default_dtype(torch.float32)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Tiny random checkpoints sharing one tokenizer: SDAR targets (dense and MoE), an SDAR draft,
    an AR model."""
    root = tmp_path_factory.mktemp("ckpts")
    tok = build_tokenizer()
    return {
        "target": make_tiny_checkpoint(root / "target", seed=0, tokenizer=tok),
        "target1": make_tiny_checkpoint(root / "target1", seed=3, num_layers=1, tokenizer=tok),
        "target8": make_tiny_checkpoint(root / "target8", seed=4, block_size=8, tokenizer=tok),
        "draft": make_tiny_checkpoint(root / "draft", seed=1, num_layers=1, hidden_size=32, tokenizer=tok),
        "ar": make_tiny_checkpoint(root / "ar", model_type="qwen3", seed=2, tokenizer=tok),
        "sharded": make_tiny_checkpoint(root / "sharded", seed=5, max_shard_size="60KB", tokenizer=tok),
        # SDAR-MoE target: layer 0 experts, layer 1 the dense MLP (mlp_only_layers).
        "moe": make_tiny_moe_checkpoint(root / "moe", seed=6, mlp_only_layers=(1,), tokenizer=tok),
    }

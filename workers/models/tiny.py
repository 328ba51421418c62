"""Tiny random checkpoints in the real on-disk formats: the no-download demo's models (pipeline.demo),
the GPU checks' small models, and the tests' fixtures.

A Qwen3 model is built with transformers, saved with ``save_pretrained`` (safetensors), and for
``model_type="sdar"`` relabelled the way published SDAR checkpoints are (architectures, auto_map,
block_size, mask_token_id, top-level integer rope_theta, untied head).
"""
from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Tom has 12 apples and buys 7 more. How many apples does he have? 12 + 7 = 19 #### 19",
    "Speculative decoding drafts tokens with a small model and verifies them with a large one.",
]


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer with the Qwen-style special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS, chat_template=CHAT_TEMPLATE)


def make_tiny_checkpoint(path, model_type: str = "sdar", seed: int = 0, hidden_size: int = 64,
                         num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                         intermediate_size: int = 128, block_size: int = 4, vocab_size: int = 384,
                         tie_word_embeddings: bool = False, max_shard_size: str | None = None,
                         tokenizer=None) -> Path:
    """Write a random model + tokenizer directory and return its path."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tok = tokenizer or build_tokenizer(vocab_size)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      num_key_value_heads=num_kv_heads, head_dim=hidden_size // num_heads,
                      max_position_embeddings=2048, tie_word_embeddings=tie_word_embeddings,
                      rope_theta=1000000.0 if model_type == "sdar" else 10000.0,
                      bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    _randomize_and_save(Qwen3ForCausalLM(cfg), tok, path, max_shard_size)
    if model_type == "sdar":
        relabel_as_sdar(path, block_size, tok.convert_tokens_to_ids("<|MASK|>"))
    return path


def make_tiny_moe_checkpoint(path, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                             num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 96,
                             num_experts: int = 8, top_k: int = 2, moe_intermediate_size: int = 32,
                             norm_topk_prob: bool = True, decoder_sparse_step: int = 1,
                             mlp_only_layers: tuple[int, ...] = (), block_size: int = 4,
                             vocab_size: int = 384, tokenizer=None) -> Path:
    """A random Qwen3-MoE model saved by transformers and relabelled as SDAR-MoE (``sdar_moe``,
    ``SDARMoeForCausalLM``), the way the published SDAR-30B-A3B checkpoint spells its config."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    path = Path(path)
    tok = tokenizer or build_tokenizer(vocab_size)
    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_kv_heads, head_dim=hidden_size // num_heads,
                         num_experts=num_experts, num_experts_per_tok=top_k,
                         moe_intermediate_size=moe_intermediate_size, norm_topk_prob=norm_topk_prob,
                         decoder_sparse_step=decoder_sparse_step, mlp_only_layers=list(mlp_only_layers),
                         max_position_embeddings=2048, tie_word_embeddings=False, rope_theta=1000000.0,
                         bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    _randomize_and_save(Qwen3MoeForCausalLM(cfg), tok, path)
    relabel_as_sdar(path, block_size, tok.convert_tokens_to_ids("<|MASK|>"), moe=True)
    return path


def _randomize_and_save(model, tok, path: Path, max_shard_size: str | None = None) -> None:
    """Weights drawn larger than the default init (so argmax ties never happen and a MoE router is
    decisive), then the model, the tokenizer and a generation config stopping at the chat ends."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    tok.save_pretrained(path)
    stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": stops, "do_sample": False}))


def relabel_as_sdar(path: Path, block_size: int, mask_token_id: int, moe: bool = False) -> None:
    """Rewrite config.json the way published SDAR checkpoints spell it (``moe``: SDAR-MoE's names,
    and ``num_experts`` where transformers 5 writes ``num_local_experts``)."""
    raw = json.loads((path / "config.json").read_text())
    theta = raw.pop("rope_parameters", None) or {}
    if moe:
        raw["num_experts"] = raw.pop("num_local_experts", raw.get("num_experts"))
    name, module = ("SDARMoe", "sdar_moe") if moe else ("SDAR", "sdar")
    raw.update({
        "model_type": module, "architectures": [f"{name}ForCausalLM"], "block_size": block_size,
        "mask_token_id": mask_token_id, "rope_theta": int(theta.get("rope_theta", raw.get("rope_theta", 1e6))),
        "rope_scaling": None, "use_cache": False, "attn_implementation": "flex_attention", "debug": False,
        "ep_size": 1, "fuse_cross_entropy": True, "micro_forward": False, "skip_checkpoint": False,
        "use_deepep": False,
        "auto_map": {"AutoConfig": f"configuration_{module}.{name}Config",
                     "AutoModel": f"modeling_{module}.{name}Model",
                     "AutoModelForCausalLM": f"modeling_{module}.{name}ForCausalLM"},
    })
    (path / "config.json").write_text(json.dumps(raw, indent=2))

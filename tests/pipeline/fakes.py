"""Test doubles: a tiny model directory (config + word-level tokenizer) and a fake engine.

Used where the real engine is beside the point (config, validation, row contract); the
end-to-end tests run the real engine on tiny random checkpoints when it is available.
"""
from __future__ import annotations

import json
from pathlib import Path

from workers.api import Request, Result
from workers.text.tokenizer import load_tokenizer

WORDS = ["<pad>", "<eos>", "<mask>", "<unk>"] + [f"w{i}" for i in range(28)] + \
    "write a haiku about the sea what is explain list name give hello world".split()


def make_model_dir(path: Path, vocab_extra: list[str] = ()) -> Path:
    """A directory that passes load_config and load_tokenizer (no weights)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(WORDS + list(vocab_extra))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", mask_token="<mask>")
    fast.save_pretrained(path)
    config = {"model_type": "sdar", "vocab_size": len(vocab), "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 64, "block_size": 4, "mask_token_id": 2}
    (path / "config.json").write_text(json.dumps(config))
    _write_placeholder_weights(path)
    return path


def _write_placeholder_weights(path: Path) -> None:
    """Zero weights with the shapes config.json implies, so validation's checkpoint check
    (pipeline.checkpoint_check) passes; the fake engine never reads them."""
    import numpy as np
    from safetensors.numpy import save_file

    from pipeline.checkpoint_check import expected_shapes
    from workers.models import load_config

    shapes = expected_shapes(load_config(path))
    save_file({name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()},
              str(path / "model.safetensors"))


class FakeEngine:
    """Echoes the prompt's ids up to max_new_tokens; fills every statistic deterministically."""

    max_prompt_tokens = 48
    max_context = 96  # prompt + max_new_tokens must fit

    def __init__(self, config):
        self.tokenizer = load_tokenizer(config.target)
        self.decode = config.decode
        self.device = "cpu"

    def generate(self, requests: list[Request]) -> list[Result]:
        return [self._one(r) for r in requests]

    def _one(self, r: Request) -> Result:
        budget = r.max_new_tokens or self.decode.max_new_tokens
        ids = (r.prompt_ids * budget)[:budget]
        return Result(id=r.id, token_ids=ids, finish_reason="length", num_input_tokens=len(r.prompt_ids),
                      num_rounds=len(ids), num_drafted_tokens=2 * len(ids), num_accepted_tokens=len(ids),
                      num_target_forwards=len(ids), num_draft_forwards=0, time_taken_s=0.01)

    def close(self):
        pass


class HangAfterFirstEngine(FakeEngine):
    """Answers its first batch, then never returns (a hung engine call)."""

    calls = 0

    def generate(self, requests: list[Request]) -> list[Result]:
        import time

        self.calls += 1
        if self.calls > 1:
            time.sleep(3600)
        return super().generate(requests)

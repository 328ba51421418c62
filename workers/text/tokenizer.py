"""Tokenizer, chat template and stop ids of a checkpoint directory."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..models.config import ModelLoadError


@dataclass
class TokenizerBundle:
    tokenizer: object  # transformers PreTrainedTokenizerBase
    stop_ids: tuple[int, ...]
    template_time_limit_s: float = 2.0           # workers.text.chat_template.RENDER_TIME_LIMIT_S
    template_max_chars: int = 4 * 1024 * 1024   # workers.text.chat_template.RENDER_MAX_CHARS

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_prompt(self, prompt: str | None = None, messages: list | None = None,
                      use_chat_template: bool = True) -> list[int]:
        if messages is not None:
            if not self.has_chat_template:
                raise ValueError("messages given but the tokenizer has no chat template")
            return self._encode_text(self.render_chat(_check_messages(messages)))
        if use_chat_template and self.has_chat_template:
            return self._encode_text(self.render_chat([{"role": "user", "content": prompt}]))
        return self._encode_text(prompt)

    def render_chat(self, messages: list[dict]) -> str:
        """The chat template applied to ``messages`` with a generation prompt, as transformers'
        apply_chat_template renders it, under a time limit and an output-size limit
        (workers.text.chat_template; TemplateLimitError past either)."""
        from .chat_template import render

        return render(self.tokenizer.chat_template, self.template_time_limit_s, self.template_max_chars,
                      messages=messages, tools=None, documents=None, add_generation_prompt=True,
                      **self.tokenizer.special_tokens_map)

    def _encode_text(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"prompt must be text, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def vocab_fingerprint(self) -> tuple[int, dict]:
        """What two tokenizers must agree on for a draft to serve a target."""
        return len(self.tokenizer), self.tokenizer.get_vocab()


def _check_messages(messages) -> list[dict]:
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError("each chat message must be a mapping with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise ValueError("empty messages list")
    return out


def tokenizer_class(model_dir: Path):
    """The transformers class ``tokenizer_config.json`` names (its fast variant first, as
    AutoTokenizer picks), taken from ``transformers`` itself; None when it names none we know.

    The reason not to ask AutoTokenizer: importing it imports transformers' model auto-factory,
    which imports generation, tensor-parallel and FSDP helpers and through them scikit-learn,
    SciPy and SymPy where installed: 6.3 s on an H100 machine's image, against 0.015 s for a
    tokenizer class itself (jobs/gpu_checks/load_probe.py), paid by every engine actor's start."""
    import transformers

    try:
        name = json.loads((model_dir / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None
    if not isinstance(name, str) or not name.isidentifier():
        return None
    for candidate in (name,) if name.endswith("Fast") else (f"{name}Fast", name):
        try:
            return getattr(transformers, candidate)
        except (AttributeError, ImportError):
            continue
    return None


def load_tokenizer(model_dir: str | Path) -> TokenizerBundle:
    from transformers.utils import logging as hf_logging

    model_dir = Path(model_dir)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it warns that "sdar" is an unknown model type; we know
    try:
        cls = tokenizer_class(model_dir)
        if cls is None:
            from transformers import AutoTokenizer as cls
        # trust_remote_code=False: SDAR configs carry an auto_map we must never execute.
        tok = cls.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as err:
        raise ModelLoadError(f"{model_dir}: cannot load the tokenizer ({type(err).__name__}: {err})") from None
    finally:
        hf_logging.set_verbosity(level)
    return TokenizerBundle(tok, stop_ids(model_dir, tok))


def stop_ids(model_dir: Path, tok) -> tuple[int, ...]:
    """Stop ids from generation_config.json, else the tokenizer's eos."""
    path = model_dir / "generation_config.json"
    ids = None
    if path.is_file():
        ids = json.loads(path.read_text()).get("eos_token_id")
    if ids is None:
        ids = tok.eos_token_id
    if ids is None:
        return ()
    return tuple(int(i) for i in (ids if isinstance(ids, list) else [ids]))

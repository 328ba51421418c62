"""The tokenizer loads through the class its tokenizer_config.json names, as AutoTokenizer would
(same class, same ids, same template, same special tokens), without importing AutoTokenizer's
model auto-factory (seconds of imports in every engine actor)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workers.text.tokenizer import load_tokenizer

REFERENCE = Path(__file__).resolve().parents[3] / "models" / "reference" / "target"
TEXTS = ["hello world", "<|im_start|>user\nWhat is 12+7?<|im_end|>\n", "  spaces\tand\nnewlines 123 ünïcödé 中文",
         "<|MASK|><|endoftext|>"]


def _checkpoint(tmp_path, tokenizer_class) -> Path:
    model = tmp_path / "m"
    shutil.copytree(REFERENCE, model, ignore=shutil.ignore_patterns("*.safetensors"))
    path = model / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    if tokenizer_class is None:
        cfg.pop("tokenizer_class", None)
    else:
        cfg["tokenizer_class"] = tokenizer_class
    path.write_text(json.dumps(cfg))
    return model


@pytest.mark.parametrize("tokenizer_class", [None, "Qwen2Tokenizer", "PreTrainedTokenizerFast", "NoSuchTokenizer"])
# (no name, or one transformers lacks: AutoTokenizer itself loads it, whatever it makes of it)
def test_same_tokenizer_as_autotokenizer(tmp_path, tokenizer_class):
    from transformers import AutoTokenizer

    model = _checkpoint(tmp_path, tokenizer_class)
    ours = load_tokenizer(model).tokenizer
    auto = AutoTokenizer.from_pretrained(str(model), trust_remote_code=False)
    assert type(ours) is type(auto)
    for text in TEXTS:
        ids = auto.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special_tokens=False) == ids
        assert ours.decode(ids, skip_special_tokens=True) == auto.decode(ids, skip_special_tokens=True)
    assert ours.chat_template == auto.chat_template and ours.special_tokens_map == auto.special_tokens_map


def test_loading_does_not_import_the_model_auto_factory():
    code = ("import sys; from workers.text.tokenizer import load_tokenizer; "
            f"load_tokenizer({str(REFERENCE)!r}); "
            "print(sorted(m for m in ('transformers.models.auto.auto_factory', 'transformers.generation') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"

"""The reference-family training job at toy scale on CPU, and its arithmetic data."""
from __future__ import annotations

import json
import re

import torch

from pipeline import reference_data as rd
from jobs import train_reference as tr
from jobs.train_reference.losses import diffusion_visible


def _solve(question: str) -> int:
    """Independent check of a generated problem: replay its statements."""
    total = int(re.match(r"\w+ has (\d+) ", question).group(1))
    for sent in re.split(r"(?<=\.) ", question)[1:-1]:
        n = [int(x) for x in re.findall(r"\d+", sent)]
        if " more " in sent:
            total += n[0]
        elif any(v in sent for v in ("gives away", "loses", "eats", "sells")):
            total -= n[0]
        elif " buys " in sent:
            total += n[0] * n[1]
        elif "doubles" in sent:
            total *= 2
        elif "triples" in sent:
            total *= 3
        elif "times as many" in sent:
            total *= n[0]
        elif "splits" in sent:
            total //= n[0]
        else:
            raise AssertionError(sent)
    return total


def test_arithmetic_splits_disjoint_and_correct():
    train = rd.train_problems(3000, seed=0)
    held = rd.heldout_problems(300)
    assert len(held) == 300 and held == rd.heldout_problems(300)  # deterministic
    assert not {p.question for p in train} & {q for q, _ in held}
    assert all(not rd.is_heldout(p.question) for p in train)
    assert all(rd.is_heldout(q) for q, _ in held)
    for p in train[:500]:
        assert p.solution.endswith(f"#### {p.answer}")
        assert rd.extract_answer(p.solution) == p.answer == str(_solve(p.question))
        assert all(int(x) < 1000 for x in re.findall(r"\d+", p.question + p.solution))
        assert 1 <= p.solution.count("=") <= 8
    for q, a in held[:100]:
        assert a == str(_solve(q))


def test_code_documents_skip_tests():
    docs = rd.code_documents(max_files=50)
    assert docs and all(not {"test", "tests", "idlelib"} & set(path.split("/")[:-1]) for path, _ in docs)


def test_diffusion_mask_layout():
    doc = torch.tensor([[0] * 8 + [1] * 4])
    pos = torch.tensor([list(range(8)) + list(range(4))])
    vis = diffusion_visible(doc, pos, 4)[0]
    L = 12
    noisy, clean = slice(0, L), slice(L, 2 * L)
    # noisy block 1 (positions 4-7) sees itself and clean block 0, not clean block 1
    assert vis[noisy][5, 4:8].all() and not vis[noisy][5, :4].any()
    assert vis[5, L:L + 4].all() and not vis[5, L + 4:L + 8].any()
    # clean: block-causal; never sees noisy tokens; documents do not see each other
    assert not vis[clean, noisy].any()  # clean rows never see noisy columns
    assert vis[L + 1, L:L + 4].all() and not vis[L + 1, L + 4:].any()
    assert vis[L + 5, L:L + 8].all()
    assert not vis[L + 8, L:L + 8].any() and vis[L + 8, L + 8:].all()


def test_toy_training_outputs_load(tmp_path):
    from transformers import AutoTokenizer
    from workers.models import load_config, load_model
    from workers.text.tokenizer import load_tokenizer

    out = tmp_path / "ref"
    results = tr.main(["--scale", "toy", "--out", str(out), "--device", "cpu"])
    assert set(results["eval"]) == {"target", "draft", "draft-ar"}
    for name, model_type in (("target", "sdar"), ("draft", "sdar"), ("draft-ar", "qwen3")):
        d = out / name
        cfg = load_config(d)
        assert cfg.model_type == model_type
        raw = json.loads((d / "config.json").read_text())
        tok = AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
        assert tok.chat_template and "<|im_start|>" in tok.chat_template
        prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
        assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        gen = json.loads((d / "generation_config.json").read_text())
        assert gen["eos_token_id"] == [tok.convert_tokens_to_ids("<|im_end|>"),
                                       tok.convert_tokens_to_ids("<|endoftext|>")]
        assert load_tokenizer(d).stop_ids == tuple(gen["eos_token_id"])
        if model_type == "sdar":
            assert raw["architectures"] == ["SDARForCausalLM"] and raw["block_size"] == 4
            assert cfg.mask_token_id == tok.convert_tokens_to_ids("<|MASK|>") == tok.mask_token_id
            assert raw["tie_word_embeddings"] is False and "rope_theta" in raw
        model = load_model(d)
        assert model.config.vocab_size == len(tok)
        if model_type == "sdar":
            assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert (out / "train_summary.json").is_file()

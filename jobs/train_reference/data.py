"""Training data: the tokenizer trained on the corpus, documents packed into rows, and batches.

The corpus is the running interpreter's standard library source plus generated arithmetic word
problems (``pipeline.reference_data``). Each document starts at a block boundary with its own
positions from 0, so training sees exactly the layouts decoding sees.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import reference_data as rd

from .settings import Settings


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]


# Qwen2/3's pre-tokenizer pattern: digits are split one by one.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def chat_prompt(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def train_tokenizer(texts: list[str], vocab: int, out_dir: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    # tokenizer_config.json written by hand in the transformers 4.5x / Qwen3 style, so that every
    # transformers version loads it the same way (PreTrainedTokenizerFast over tokenizer.json).
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    config = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "mask_token": "<|MASK|>", "model_max_length": 32768, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": None,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    fast = PreTrainedTokenizerFast.from_pretrained(str(out_dir))
    return fast


@dataclass
class Rows:
    ids: torch.Tensor  # [N, L] long
    pos: torch.Tensor  # [N, L] position inside the document
    doc: torch.Tensor  # [N, L] document index inside the row, -1 for row padding
    tgt: torch.Tensor  # [N, L] bool: maskable / diffusion loss target

    def to(self, device):
        return Rows(*(t.to(device) for t in (self.ids, self.pos, self.doc, self.tgt)))


def pack(docs: list[tuple[list[int], list[bool]]], L: int, pad_id: int, rng: random.Random) -> Rows:
    """Pack documents (each a multiple of the block length, <= L) into rows of L tokens."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    rows, open_rows = [], []
    for i in order:
        ids, tgt = docs[i]
        for row in open_rows:
            if len(row[0]) + len(ids) <= L:
                break
        else:
            row = [[], [], [], [], 0]
            open_rows.append(row)
        row[0].extend(ids)
        row[1].extend(range(len(ids)))
        row[2].extend([row[4]] * len(ids))
        row[3].extend(tgt)
        row[4] += 1
        full = [r for r in open_rows if L - len(r[0]) < 16]
        for r in full:
            open_rows.remove(r)
            rows.append(r)
        if len(open_rows) > 16:
            rows.append(open_rows.pop(0))
    rows.extend(open_rows)
    n = len(rows)
    out = Rows(torch.full((n, L), pad_id, dtype=torch.long), torch.zeros((n, L), dtype=torch.long),
               torch.full((n, L), -1, dtype=torch.long), torch.zeros((n, L), dtype=torch.bool))
    for k, r in enumerate(rows):
        m = len(r[0])
        out.ids[k, :m] = torch.tensor(r[0])
        out.pos[k, :m] = torch.tensor(r[1])
        out.pos[k, m:] = torch.arange(L - m)
        out.doc[k, :m] = torch.tensor(r[2])
        out.tgt[k, :m] = torch.tensor(r[3])
    return out


def pad_to_block(ids: list[int], tgt: list[bool], block: int, pad_id: int):
    extra = (-len(ids)) % block
    # Padding inside a document's last block is a real target (the model learns to emit
    # <|endoftext|> after the end), as SDAR pads with its eos.
    return ids + [pad_id] * extra, tgt + [True] * extra


def build_data(s: Settings, out_dir: Path, seed: int, log):
    t0 = time.time()
    problems = rd.train_problems(s.n_problems, seed=seed)
    code = rd.code_documents(max_files=s.max_code_files)
    log(f"data: {len(problems)} problems, {len(code)} stdlib files "
        f"({sum(len(t) for _, t in code) / 1e6:.1f} M chars), {time.time() - t0:.1f}s")
    prompts = [chat_prompt(p.question) for p in problems]
    completions = [p.solution + "<|im_end|>" for p in problems]
    tok_texts = [t for _, t in code] + [a + b for a, b in zip(prompts[:50_000], completions[:50_000])]
    tok = train_tokenizer(tok_texts, s.vocab, out_dir / "tokenizer")
    ids_of = tok.convert_tokens_to_ids
    special = {name: ids_of(name) for name in SPECIAL_TOKENS}
    pad_id = special["<|endoftext|>"]
    log(f"tokenizer: vocab {len(tok)}, special {special}, {time.time() - t0:.1f}s")

    backend = tok.backend_tokenizer
    enc_p = [e.ids for e in backend.encode_batch(prompts, add_special_tokens=False)]
    enc_c = [e.ids for e in backend.encode_batch(completions, add_special_tokens=False)]
    arith_docs = []
    for p, c in zip(enc_p, enc_c):
        ids, tgt = pad_to_block(p + c, [False] * len(p) + [True] * len(c), s.block, pad_id)
        if len(ids) <= s.seq_len:
            arith_docs.append((ids, tgt))
    code_docs = []
    enc_code = backend.encode_batch([t for _, t in code], add_special_tokens=False)
    for e in enc_code:
        ids = e.ids + [pad_id]
        for i in range(0, len(ids), s.seq_len):
            chunk = ids[i:i + s.seq_len]
            if len(chunk) >= 8:
                code_docs.append(pad_to_block(chunk, [True] * len(chunk), s.block, pad_id))
    rng = random.Random(seed)
    arith = pack(arith_docs, s.seq_len, pad_id, rng)
    code_rows = pack(code_docs, s.seq_len, pad_id, rng)
    lens = [len(d[0]) for d in arith_docs]
    log(f"rows: arithmetic {arith.ids.shape[0]} (docs {len(arith_docs)}, mean {sum(lens) / len(lens):.0f} tok), "
        f"code {code_rows.ids.shape[0]} ({sum(len(d[0]) for d in code_docs) / 1e6:.2f} M tok), "
        f"{time.time() - t0:.1f}s")
    return tok, special, arith, code_rows


def sample_batch(pool: Rows, n: int, gen, device) -> tuple:
    idx = torch.randint(0, pool.ids.shape[0], (n,), generator=gen, device=device)
    return pool.ids[idx], pool.pos[idx], pool.doc[idx], pool.tgt[idx]


def mixed_batch(arith: Rows, code: Rows, n: int, code_frac: float, gen, device):
    nc = int(round(n * code_frac))
    parts = [sample_batch(arith, n - nc, gen, device)]
    if nc:
        parts.append(sample_batch(code, nc, gen, device))
    return [torch.cat(xs, dim=0) for xs in zip(*parts)]

"""Train the reference model family (SDAR-format target and draft, Qwen3-format AR draft).

Everything is offline and seeded: the data is the running interpreter's standard library source
plus generated arithmetic word problems (``pipeline.reference_data``); a byte-level BPE tokenizer is
trained on it; then three models are trained in one loop:

* ``target`` and ``draft`` (``model_type: sdar``, block length 4): autoregressive pretraining
  first, then block-diffusion training the way SDAR is trained - a noisy copy and a clean copy of
  each sequence side by side, noisy block k attends to itself (bidirectionally) and to clean
  blocks < k, clean tokens attend block-causally; per-sequence mask ratio t ~ U(eps, 1); loss on
  the masked positions with unshifted logits; prompt tokens are never masked.
* ``draft-ar`` (``model_type: qwen3``): autoregressive only.

Sequences are packed from whole documents, each starting at a block boundary with its own
positions from 0 and attending only inside itself, so training sees exactly the layouts decoding
sees (blocks aligned to position 0 of the prompt).

Usage::

    python -m jobs.train_reference --out models/reference            # full scale, one GPU
    python -m jobs.train_reference --scale toy --out /tmp/ref         # a few CPU steps (tests)
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import reference_data as rd
from workers.models import ForwardBatch, Qwen3Model, parse_config

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
TRANSFORMERS_VERSION = "4.52.4"


# --------------------------------------------------------------------------------------------
# Settings


@dataclass
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    tied: bool = False


@dataclass
class Settings:
    vocab: int = 4096
    seq_len: int = 256  # L; diffusion rows hold 2L tokens
    block: int = 4
    n_problems: int = 200_000
    max_code_files: int | None = None
    target: ModelShape = field(default_factory=lambda: ModelShape(320, 8, 5, 1, 64, 576))
    draft: ModelShape = field(default_factory=lambda: ModelShape(256, 2, 4, 2, 64, 512))
    draft_ar: ModelShape = field(default_factory=lambda: ModelShape(256, 2, 4, 2, 64, 512, tied=True))
    ar_seconds: float = 120.0
    diff_seconds: float = 290.0
    ar_steps: int | None = None  # fixed step counts override the time budgets
    diff_steps: int | None = None
    ar_batch: int = 128  # rows of L tokens
    diff_batch: int = 64  # rows of 2L tokens
    ar_code_frac: float = 0.5
    diff_code_frac: float = 0.25
    lr: float = 1e-3
    weight_decay: float = 0.1
    mask_eps: float = 1e-3
    eval_n: int = 500
    max_new_tokens: int = 192
    log_every: int = 50


def toy_settings() -> Settings:
    return Settings(
        vocab=400, seq_len=128, n_problems=400, max_code_files=8,
        target=ModelShape(32, 2, 2, 1, 16, 64), draft=ModelShape(32, 1, 2, 1, 16, 64),
        draft_ar=ModelShape(32, 1, 2, 1, 16, 64, tied=True),
        ar_seconds=1e9, diff_seconds=1e9, ar_steps=3, diff_steps=3, ar_batch=4, diff_batch=4,
        eval_n=4, max_new_tokens=12, log_every=1,
    )


# --------------------------------------------------------------------------------------------
# Tokenizer


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


# --------------------------------------------------------------------------------------------
# Data: documents -> packed rows


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


# --------------------------------------------------------------------------------------------
# Models and configs


def model_config(shape: ModelShape, kind: str, s: Settings, special: dict, vocab: int) -> dict:
    eot = special["<|endoftext|>"]
    common = {
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": eot, "eos_token_id": eot,
        "head_dim": shape.head_dim, "hidden_act": "silu", "hidden_size": shape.hidden,
        "initializer_range": 0.02, "intermediate_size": shape.inter, "max_position_embeddings": 32768,
        "max_window_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers, "num_key_value_heads": shape.kv_heads, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": shape.tied, "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION, "use_sliding_window": False, "vocab_size": vocab,
    }
    if kind == "sdar":
        cfg = {
            "architectures": ["SDARForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                         "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
            "attn_implementation": "flex_attention", "debug": False, "block_size": s.block,
            "mask_token_id": special["<|MASK|>"], "ep_size": 1, "fuse_cross_entropy": True,
            "micro_forward": False, "model_type": "sdar", "skip_checkpoint": False, "use_cache": False,
            "use_deepep": False, **common,
        }
    else:
        cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_cache": True, **common}
    return dict(sorted(cfg.items()))


def init_model(cfg: dict, seed: int, device) -> Qwen3Model:
    torch.manual_seed(seed)
    model = Qwen3Model(parse_config(cfg))
    n_layers = cfg["num_hidden_layers"]
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    return model.to(device)


def num_bytes_bf16(model: Qwen3Model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * 2
    return total


# --------------------------------------------------------------------------------------------
# Losses


def ar_visible(doc: torch.Tensor) -> torch.Tensor:
    L = doc.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=doc.device).tril()
    return (doc[:, :, None] == doc[:, None, :]) & causal


def ar_loss(model, ids, pos, doc, vis):
    h = model.hidden(ids, ForwardBatch(pos, vis))
    valid = (doc[:, 1:] == doc[:, :-1]) & (doc[:, :-1] >= 0)
    return F.cross_entropy(model.logits(h[:, :-1][valid]), ids[:, 1:][valid])


def diffusion_visible(doc: torch.Tensor, pos: torch.Tensor, block: int) -> torch.Tensor:
    """[b, 2L, 2L]: noisy copy first, clean copy second."""
    same = doc[:, :, None] == doc[:, None, :]
    blk = pos // block
    bi, bj = blk[:, :, None], blk[:, None, :]
    nn_ = same & (bi == bj)
    nc = same & (bj < bi)
    cc = same & (bj <= bi)
    top = torch.cat([nn_, nc], dim=2)
    bottom = torch.cat([torch.zeros_like(cc), cc], dim=2)
    return torch.cat([top, bottom], dim=1)


def diffusion_inputs(ids, pos, tgt, mask_id, eps, gen):
    b, L = ids.shape
    t = eps + (1 - eps) * torch.rand(b, 1, device=ids.device, generator=gen)
    masked = tgt & (torch.rand(b, L, device=ids.device, generator=gen) < t)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    return torch.cat([noisy, ids], dim=1), torch.cat([pos, pos], dim=1), masked


def diffusion_loss(model, inp, pos2, vis, ids, masked):
    L = ids.shape[1]
    h = model.hidden(inp, ForwardBatch(pos2, vis))[:, :L]
    return F.cross_entropy(model.logits(h[masked]), ids[masked])  # unshifted: position i -> token i


# --------------------------------------------------------------------------------------------
# Quick evaluation: greedy no-cache decoding (sequential for SDAR, plain greedy for AR)


@torch.no_grad()
def greedy_decode(model, prompts: list[list[int]], *, diffusion: bool, block: int, mask_id: int | None,
                  stop_ids: set[int], max_new: int, device, batch_size: int = 256) -> list[list[int]]:
    outs = []
    for k in range(0, len(prompts), batch_size):
        outs.extend(_greedy_batch(model, prompts[k:k + batch_size], diffusion, block, mask_id, stop_ids,
                                  max_new, device))
    return outs


def _greedy_batch(model, prompts, diffusion, block, mask_id, stop_ids, max_new, device):
    n = len(prompts)
    seqs = [list(p) for p in prompts]
    gen = [[] for _ in range(n)]
    active = list(range(n))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    while active:
        feeds, reads = [], []
        for r in active:
            c = len(seqs[r])
            if diffusion:
                end = (c // block) * block + block  # current block: committed tokens then masks
                feeds.append(seqs[r] + [mask_id] * (end - c))
                reads.append(c)  # sequential: the leftmost masked position
            else:
                feeds.append(seqs[r])
                reads.append(c - 1)
        width = max(len(f) for f in feeds)
        ids = torch.zeros(len(active), width, dtype=torch.long)
        lens = torch.tensor([len(f) for f in feeds])
        for i, f in enumerate(feeds):
            ids[i, :len(f)] = torch.tensor(f)
        ids, lens = ids.to(device), lens.to(device)
        ar = torch.arange(width, device=device)
        if diffusion:
            vis = (ar[None, :] // block) <= (ar[:, None] // block)
        else:
            vis = ar[None, :] <= ar[:, None]
        vis = vis[None] & (ar[None, None, :] < lens[:, None, None])
        vis = vis | torch.eye(width, dtype=torch.bool, device=device)[None]  # padding rows see themselves
        positions = ar[None].expand(len(active), -1)
        with autocast:
            h = model.hidden(ids, ForwardBatch(positions, vis))
            sel = h[torch.arange(len(active), device=device), torch.tensor(reads, device=device)]
            nxt = model.logits(sel).argmax(-1).tolist()
        still = []
        for r, t in zip(active, nxt):
            seqs[r].append(t)
            gen[r].append(t)
            if t not in stop_ids and len(gen[r]) < max_new:
                still.append(r)
        active = still
    return gen


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def evaluate(model, tok, problems, *, diffusion, block, mask_id, stop_ids, max_new, device):
    prompts = [tok.encode(chat_prompt(q), add_special_tokens=False) for q, _ in problems]
    model.eval()
    outs = greedy_decode(model, prompts, diffusion=diffusion, block=block, mask_id=mask_id,
                         stop_ids=stop_ids, max_new=max_new, device=device)
    model.train()
    correct, samples = 0, []
    for (q, a), o in zip(problems, outs):
        text = tok.decode(o, skip_special_tokens=True)
        ok = rd.extract_answer(text) == a
        correct += ok
        if len(samples) < 3:
            samples.append({"question": q, "answer": a, "output": text, "ok": bool(ok)})
    return correct / max(1, len(problems)), samples


# --------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(model: Qwen3Model, cfg: dict, tok_dir: Path, out: Path, special: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, t in model.published_state_dict().items():
        if cfg["tie_word_embeddings"] and name == "lm_head.weight":
            continue
        state[name] = t.detach().to("cpu", torch.bfloat16).contiguous().clone()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": special["<|endoftext|>"], "do_sample": False,
           "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]],
           "pad_token_id": special["<|endoftext|>"], "transformers_version": TRANSFORMERS_VERSION}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for f in tok_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())


def export_parts(root: Path, names: list[str], export: Path, part_bytes: int = 15 * 2**20) -> None:
    """The checkpoints as one tar split into parts (for copying off a machine file by file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(str(root / name), arcname=name)
    data = buf.getvalue()
    export.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(data), part_bytes):
        (export / f"reference.tar.part{i // part_bytes:02d}").write_bytes(data[i:i + part_bytes])


# --------------------------------------------------------------------------------------------
# Timing


@torch.no_grad()
def time_forward(model_dir: Path, device, n: int = 100, prompt: int = 256, q: int = 4) -> float:
    """Seconds per forward of q new tokens (batch 1) over a cached prompt, bf16 weights."""
    from workers.models import load_model
    from workers.runner import ModelRunner

    model = load_model(model_dir, device=device, dtype="bfloat16")
    cfg = model.config
    runner = ModelRunner(model, device, static_shapes=False)
    pages = -(-(prompt + q) // 16)
    runner.allocate(1, num_pages=pages, page_size=16, pages_per_slot=pages)
    runner.set_pages([0], [list(range(pages))])
    slots = torch.zeros(1, dtype=torch.long, device=device)
    runner.prefill(slots, [torch.randint(0, cfg.vocab_size, (prompt,)).tolist()], block=4)
    new = torch.randint(0, cfg.vocab_size, (1, q), device=device)
    npos = torch.arange(prompt, prompt + q, device=device)[None]
    nvis = torch.ones(1, q, q, dtype=torch.bool, device=device)

    def step():
        return runner.logits(runner.hidden(new, npos, nvis, slots, max_cache_len=prompt))

    for _ in range(10):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------------------------
# Main


def lr_at(p: float, peak: float, warmup: float = 0.03) -> float:
    if p < warmup:
        return peak * (p / warmup)
    q = min(1.0, (p - warmup) / (1 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))


def sample_batch(pool: Rows, n: int, gen, device) -> tuple:
    idx = torch.randint(0, pool.ids.shape[0], (n,), generator=gen, device=device)
    return pool.ids[idx], pool.pos[idx], pool.doc[idx], pool.tgt[idx]


def mixed_batch(arith: Rows, code: Rows, n: int, code_frac: float, gen, device):
    nc = int(round(n * code_frac))
    parts = [sample_batch(arith, n - nc, gen, device)]
    if nc:
        parts.append(sample_batch(code, nc, gen, device))
    return [torch.cat(xs, dim=0) for xs in zip(*parts)]


def small_settings() -> Settings:
    """A CPU-sized smoke run that still learns something (minutes on a laptop)."""
    return Settings(
        vocab=1024, seq_len=128, n_problems=20_000, max_code_files=30,
        target=ModelShape(128, 3, 4, 2, 32, 256), draft=ModelShape(64, 1, 2, 1, 32, 128),
        draft_ar=ModelShape(64, 1, 2, 1, 32, 128, tied=True),
        ar_seconds=1e9, diff_seconds=1e9, ar_steps=150, diff_steps=300, ar_batch=16, diff_batch=16,
        lr=2e-3, eval_n=50, log_every=25,
    )


def parse_args(argv):
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="simsd train-reference", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/reference", help="output directory (target/, draft/, draft-ar/)")
    ap.add_argument("--scale", choices=["full", "small", "toy"], default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--ar-seconds", type=float)
    ap.add_argument("--diff-seconds", type=float)
    ap.add_argument("--ar-steps", type=int)
    ap.add_argument("--diff-steps", type=int)
    ap.add_argument("--n-problems", type=int)
    ap.add_argument("--eval-n", type=int)
    ap.add_argument("--export", default=None, help="also write the checkpoints as tar parts here")
    ap.add_argument("--time-forwards", action="store_true", help="time 100 batch-1 forwards per model")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s = {"toy": toy_settings, "small": small_settings, "full": Settings}[args.scale]()
    for name in ("ar_seconds", "diff_seconds", "ar_steps", "diff_steps", "n_problems", "eval_n"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if args.ar_steps is not None and args.ar_seconds is None:
        s.ar_seconds = 1e9
    if args.diff_steps is not None and args.diff_seconds is None:
        s.diff_seconds = 1e9
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log_lines = []

    def log(msg):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    build_dir = Path(tempfile.mkdtemp(prefix="train_reference_"))
    tok, special, arith, code = build_data(s, build_dir, args.seed, log)
    tok_dir = build_dir / "tokenizer"
    vocab = len(tok)
    mask_id = special["<|MASK|>"]
    arith, code = arith.to(device), code.to(device)

    cfgs = {
        "target": model_config(s.target, "sdar", s, special, vocab),
        "draft": model_config(s.draft, "sdar", s, special, vocab),
        "draft-ar": model_config(s.draft_ar, "qwen3", s, special, vocab),
    }
    models = {name: init_model(cfg, args.seed + i, device) for i, (name, cfg) in enumerate(cfgs.items())}
    sizes = {name: num_bytes_bf16(m) for name, m in models.items()}
    log("models: " + ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in sizes.items())
        + f", total {sum(sizes.values()) / 1e6:.2f} MB (bf16)")
    opts = {name: torch.optim.AdamW(m.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=s.weight_decay,
                                    fused=device.type == "cuda")
            for name, m in models.items()}
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else _null

    def update(name, loss, lr):
        for g in opts[name].param_groups:
            g["lr"] = lr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[name].parameters(), 1.0)
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    # Phase 1: autoregressive pretraining of all three models on the same batches.
    # Phase 2: block-diffusion training of target and draft; draft-ar keeps training AR.
    stats = {}
    for phase in ("ar", "diffusion"):
        budget = s.ar_seconds if phase == "ar" else s.diff_seconds
        steps = s.ar_steps if phase == "ar" else s.diff_steps
        t0, step, acc = time.time(), 0, {}
        while True:
            p = step / steps if steps else (time.time() - t0) / budget
            if steps and step >= steps or p >= 1:
                break
            if steps and time.time() - t0 > budget:
                break
            lr = lr_at(p, s.lr)
            losses = {}
            if phase == "ar":
                ids, pos, doc, _ = mixed_batch(arith, code, s.ar_batch, s.ar_code_frac, gen, device)
                vis = ar_visible(doc)
                for name in models:
                    with autocast():
                        loss = ar_loss(models[name], ids, pos, doc, vis)
                    update(name, loss, lr)
                    losses[name] = loss.detach()
            else:
                ids, pos, doc, tgt = mixed_batch(arith, code, s.diff_batch, s.diff_code_frac, gen, device)
                vis2 = diffusion_visible(doc, pos, s.block)
                inp, pos2, masked = diffusion_inputs(ids, pos, tgt, mask_id, s.mask_eps, gen)
                for name in ("target", "draft"):
                    with autocast():
                        loss = diffusion_loss(models[name], inp, pos2, vis2, ids, masked)
                    update(name, loss, lr)
                    losses[name] = loss.detach()
                # the AR draft keeps training autoregressively on the same clean rows
                with autocast():
                    loss = ar_loss(models["draft-ar"], ids, pos, doc, ar_visible(doc))
                update("draft-ar", loss, lr * 0.5)
                losses["draft-ar"] = loss.detach()
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + v
            step += 1
            if step % s.log_every == 0:
                log(f"{phase} step {step} p={p:.2f} lr={lr:.2e} " + " ".join(
                    f"{k}={float(v) / s.log_every:.3f}" for k, v in acc.items()))
                acc = {}
        if device.type == "cuda":
            torch.cuda.synchronize()
        stats[phase] = {"steps": step, "seconds": round(time.time() - t0, 1)}
        log(f"{phase} phase done: {step} steps in {time.time() - t0:.1f}s")

    # Save (then export) before evaluating, so a late failure still leaves the checkpoints.
    for name, m in models.items():
        save_checkpoint(m, cfgs[name], tok_dir, out / name, special)
    if args.export:
        export_parts(out, list(models), Path(args.export))
    log(f"saved to {out}")

    problems = rd.heldout_problems(s.eval_n)
    stop = {special["<|im_end|>"], special["<|endoftext|>"]}
    results = {"settings": {k: (v.__dict__ if isinstance(v, ModelShape) else v) for k, v in s.__dict__.items()},
               "sizes_bytes_bf16": sizes, "train": stats, "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "eval": {}}
    for name, m in models.items():
        t0 = time.time()
        acc, samples = evaluate(m, tok, problems, diffusion=name != "draft-ar", block=s.block, mask_id=mask_id,
                                stop_ids=stop, max_new=s.max_new_tokens, device=device)
        results["eval"][name] = {"accuracy": acc, "n": len(problems), "samples": samples}
        log(f"eval {name}: {acc * 100:.1f}% exact match on {len(problems)} held-out problems "
            f"({time.time() - t0:.1f}s)")
    if args.time_forwards:
        tf = {name: time_forward(out / name, device) for name in models}
        results["forward_seconds"] = tf
        log("forward (batch 1, 4 tokens over 256 cached): " + ", ".join(
            f"{k} {v * 1e3:.3f} ms" for k, v in tf.items()) + f"; target/draft {tf['target'] / tf['draft']:.2f}x")
    results["total_seconds"] = round(time.time() - t_start, 1)
    log(f"total {results['total_seconds']}s")
    (out / "train_summary.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "train_log.txt").write_text("\n".join(log_lines) + "\n")
    if args.export:
        for f in ("train_summary.json", "train_log.txt"):
            (Path(args.export) / f).write_bytes((out / f).read_bytes())
    return results


if __name__ == "__main__":
    main()

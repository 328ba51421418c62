"""ModelRunner: the one owner of a model, its paged KV pool and its CUDA graphs on a device."""
from __future__ import annotations

import types

import torch
import torch.fx.experimental._config as shape_config

from .api import ATTENTION_BACKENDS, COMPILE, LAYER_KERNELS
from .decoding import layouts
from .graphs import StaticForwards, batch_bucket
from .models import ForwardBatch, KVCache, Qwen3Model, dense_kernels
from .models.attention import NewOnlyMeta, PagedMeta, gather_meta, load_triton_backend
from .models.qwen3 import decoder_layer

PREFILL_CHUNK_TOKENS = 8192  # prompts are prefilled in packed chunks of at most this many tokens


def private_copy(fn):
    """A copy of ``fn`` with its own code object. Dynamo keeps compiled variants (and counts
    recompilations) per code object, so a runner compiling its own copy gets a cache and a
    recompile budget of its own: a target, a draft and a benchmark's other models never evict
    each other or exhaust a shared limit."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def compile_dynamic(fn):
    """``fn`` under torch.compile with dynamic shapes and without duck sizing, for its own
    compilations only. By default a first call with two equal sizes (a batch bucket of 8 rows of 8
    query tokens, common here) compiles a graph that assumes they are always equal, and every
    other shape recompiles it. Measured on CPU, reference pair, adaptive SimSD: 5 compilations
    over two engine calls, 2 of them in the second call; without duck sizing 4 (dynamo still
    specializes a batch of 1 once per model)."""
    compiled = torch.compile(fn, dynamic=True, fullgraph=True)

    def call(*args, **kwargs):
        with shape_config.patch(use_duck_shape=False):
            return compiled(*args, **kwargs)
    return call


def compiled_layer():
    """``decoder_layer`` compiled once for every batch bucket and query length of a model shape
    (see compile_dynamic)."""
    return compile_dynamic(private_copy(decoder_layer))


TRITON_MIN_HIDDEN = 1024  # auto picks the Triton kernel for models at least this wide (SDAR shapes)


def resolve_attention(name: str, device: torch.device, hidden_size: int = TRITON_MIN_HIDDEN) -> str:
    """``auto`` is the backend measured fastest for the shapes at hand (docs/engine.md). On an H100
    at SDAR shapes the Triton paged kernel beat the PyTorch path inside compiled CUDA graphs
    (SDAR-8B batch 1: 8.03 vs 8.76 ms a step; 1.7B batch 1: 3.30 vs 3.75 ms; 4B batch 128: 8,839
    vs 3,219 tok/s), with tokens identical to the eager float32 path in every checked layout; on
    the small reference pair it was slower (2,335 vs 2,598 tok/s through the pipeline). So auto is
    ``triton`` on CUDA for models at least TRITON_MIN_HIDDEN wide, ``torch`` otherwise and on CPU."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {name!r}")
    if name != "auto":
        return name
    return "triton" if device.type == "cuda" and hidden_size >= TRITON_MIN_HIDDEN else "torch"


def resolve_compile(name: str) -> bool:
    """Whether a model's layers are compiled (inside CUDA graphs only; eager paths never are).
    ``auto`` is on here; a `simsd generate` job resolves auto itself, by its length, before its
    actors start (pipeline/compile_choice.py, docs/cold-start.md)."""
    if name not in COMPILE:
        raise ValueError(f"compile must be one of {COMPILE}, got {name!r}")
    return name != "off"


def resolve_layer_kernels(name: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the dense layers run their Triton kernels (``models/dense_kernels.py``): the
    weight-streaming matmuls of forwards of at most 32 tokens (residual and SwiGLU fused, the LM
    head too) and the one-kernel K/V store.
    ``auto`` is on for a bf16/fp16 model on CUDA where Triton imports (docs/engine.md has the
    measurements); ``triton`` insists and says why it cannot; ``torch`` is cuBLAS and indexing."""
    if name not in LAYER_KERNELS:
        raise ValueError(f"layer_kernels must be one of {LAYER_KERNELS}, got {name!r}")
    if name == "torch":
        return False
    usable = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    if name == "triton" and not usable:
        raise ValueError(f"layer_kernels 'triton' needs a bf16 or fp16 model on CUDA (here: {dtype} on {device.type})")
    if usable and not dense_kernels.load():
        if name == "triton":
            raise ValueError("layer_kernels 'triton' needs triton installed")
        return False
    return usable


class ModelRunner:
    """Runs forwards of one model against its paged KV pool.

    Ids, positions and masks are ``[b, q]`` / ``[b, q, q]``; ``slots[b]`` select rows of the
    pool's page table (the pages themselves are assigned by the engine's block manager).
    """

    def __init__(self, model: Qwen3Model, device: torch.device, static_shapes: bool | None = None,
                 cuda_graphs: bool | None = None, compile_layers: bool | None = None, attention: str = "auto",
                 compile: str = "auto", layer_kernels: str = "auto"):
        """static_shapes: decode forwards run at fixed batch-bucket shapes (default: on CUDA);
        cuda_graphs: those forwards are captured and replayed as CUDA graphs (default: on CUDA);
        compile_layers: their layer function is fused by torch.compile (default: with graphs);
        attention: ``torch`` (plain PyTorch) or ``triton`` (one Triton kernel over the pool);
        ``auto`` is the measured default (see resolve_attention); compile: ``auto``, ``on`` or
        ``off``, what compile_layers defaults to with graphs (see resolve_compile); layer_kernels:
        the dense layers' Triton kernels or not (see resolve_layer_kernels)."""
        self.model, self.device = model, device
        self.config = model.config
        self.dtype = next(model.parameters()).dtype
        on_cuda = device.type == "cuda"
        self.static_shapes = on_cuda if static_shapes is None else static_shapes
        self.cuda_graphs = (self.static_shapes and on_cuda) if cuda_graphs is None else cuda_graphs
        self.static_shapes = self.static_shapes or self.cuda_graphs
        if compile_layers is None:
            compile_layers = self.cuda_graphs and resolve_compile(compile)
        self.layer_fn = compiled_layer() if compile_layers else None
        self.attention = resolve_attention(attention, device, self.config.hidden_size)
        if self.attention == "triton":
            load_triton_backend()
        self.fast_layers = resolve_layer_kernels(layer_kernels, device, self.dtype)
        self.cache: KVCache | None = None
        self.static: StaticForwards | None = None
        self.num_forwards = 0        # decoding forwards run (prefill excluded)
        self.num_query_tokens = 0    # query tokens computed by them, padding rows included

    # -- memory -----------------------------------------------------------------------------

    def allocate(self, num_slots: int, num_pages: int, page_size: int, pages_per_slot: int) -> None:
        """(Re)allocate the pool when the slots or pages asked for differ from what is held."""
        c = self.cache
        if (c is not None and c.num_slots == num_slots and c.num_pages == num_pages
                and c.page_size == page_size and c.page_table.shape[1] == pages_per_slot):
            return
        self.close()  # graphs point at the old pool: free both before allocating
        self.cache = KVCache(self.config, num_slots, num_pages, page_size, pages_per_slot, self.device, self.dtype)
        if self.static_shapes:
            self.static = StaticForwards(self)

    def batch_rows(self, b: int) -> int:
        """Rows a forward of ``b`` rows computes (fixed shapes run at the batch bucket)."""
        return batch_bucket(b) if self.static_shapes else b

    def set_pages(self, slots: list[int], tables: list[list[int]]) -> None:
        if slots:
            self.cache.set_pages(slots, tables)

    # -- forwards ---------------------------------------------------------------------------

    def hidden(self, ids, positions, visible, slots, write=None, cache_lens=None,
               max_cache_len: int | None = None) -> torch.Tensor:
        """A decoding forward of rows ``slots`` against their cache -> hidden [b, q, hidden].

        max_cache_len: a host-side upper bound of the rows' cache lengths; without it the bound is
        read from the device, which waits for every queued kernel.
        """
        cache = self.cache
        lens = cache.lengths[slots] if cache_lens is None else cache_lens
        bound = int(lens.max()) if max_cache_len is None else max_cache_len
        self.num_forwards += 1
        b, q = ids.shape
        if self.static is not None:
            forward = self.static.get(b, q, bound)
            self.num_query_tokens += forward.nb * q
            return forward(ids, positions, visible, slots, write, lens)
        self.num_query_tokens += b * q
        page_rows = cache.page_table[slots]
        if self.attention == "triton":
            meta = PagedMeta(page_rows, lens, visible[:, None], cache.page_size)
        else:
            meta = gather_meta(cache, page_rows, lens, bound, visible[:, None])
        write_idx = None if write is None else cache.write_index(page_rows, positions, write)
        return self.model.hidden(ids, ForwardBatch(positions, meta, cache, write_idx, fast=self.fast_layers))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden, fast=self.fast_layers)

    def prefill(self, slots: torch.Tensor, prompts: list[list[int]], block: int) -> None:
        """Store K/V of each prompt (block-causal, aligned to position 0) in emptied slots.

        Prompts are packed into one row per chunk (no padding to the longest prompt): a token
        sees the earlier blocks and its own block of its own prompt only.
        """
        self.cache.reset(slots)
        lengths = [len(p) for p in prompts]
        slot_list = slots.tolist()
        chunk: list[int] = []
        for i, n in enumerate(lengths):
            if chunk and sum(lengths[j] for j in chunk) + n > PREFILL_CHUNK_TOKENS:
                self._prefill_packed([slot_list[j] for j in chunk], [prompts[j] for j in chunk], block)
                chunk = []
            if n:
                chunk.append(i)
        if chunk:
            self._prefill_packed([slot_list[j] for j in chunk], [prompts[j] for j in chunk], block)
        self.cache.lengths[slots] = torch.tensor(lengths, device=self.device)

    def _prefill_packed(self, slots: list[int], prompts: list[list[int]], block: int) -> None:
        dev = self.device
        ids = torch.tensor([t for p in prompts for t in p], dtype=torch.long)
        doc = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(prompts)])
        pos = torch.cat([torch.arange(len(p)) for p in prompts])
        row = torch.tensor(slots, dtype=torch.long)[doc]
        ids, doc, pos, row = (t.to(dev) for t in (ids, doc, pos, row))
        write_idx = self.cache.flat_index(self.cache.page_table[row], pos[:, None])[:, 0]
        meta = self._prefill_meta(doc, pos, block)
        batch = ForwardBatch(pos[None], meta, self.cache, write_idx[None], fast=self.fast_layers)
        self.model.hidden(ids[None], batch)

    def _prefill_meta(self, doc: torch.Tensor, pos: torch.Tensor, block: int) -> NewOnlyMeta:
        """Block-causal visibility inside each packed prompt. With ``triton`` on CUDA, K/V are
        repeated to the query heads so SDPA runs its memory-efficient kernel, never its math
        fallback (the ``torch`` backend keeps grouped-query SDPA, as it always had)."""
        vis = (doc[:, None] == doc[None, :]) & (pos[None, :] // block <= pos[:, None] // block)
        return NewOnlyMeta(vis[None, None], repeat_kv=self.attention == "triton" and self.device.type == "cuda")

    def commit(self, slots: torch.Tensor, tokens: torch.Tensor, starts: torch.Tensor, max_start: int) -> None:
        """Store K/V of finished blocks ``tokens[b, B]`` starting at ``starts[b]`` (= cache lengths)."""
        b, B = tokens.shape
        positions = starts[:, None] + torch.arange(B, device=self.device)
        write = torch.ones(b, B, dtype=torch.bool, device=self.device)
        self.hidden(tokens, positions, layouts.full_block(b, B, self.device), slots, write, max_cache_len=max_start)
        self.cache.lengths[slots] = starts + B

    def close(self) -> None:
        if self.static is not None:
            self.static.close()
        self.static = None
        if self.cache is not None:
            self.cache.close()
        self.cache = None

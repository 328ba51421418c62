"""ModelRunner: the one owner of a model and its KV cache on a device."""
from __future__ import annotations

import torch

from .decoding import layouts
from .graphs import StaticForwards
from .models import ForwardBatch, KVCache, Qwen3Model
from .models.qwen3 import decoder_layer


def compiled_layer():
    """``decoder_layer`` under torch.compile with dynamic shapes: one compilation serves every
    batch, query length and cache span of a model shape (Dynamo caches it on the function)."""
    import torch._dynamo

    # Each model shape and layout variant is a cache entry; beyond the limit Dynamo would fall
    # back to eager silently, so leave plenty of room.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(decoder_layer, dynamic=True, fullgraph=True)


class ModelRunner:
    """Runs forwards of one model against its per-slot KV cache.

    Ids, positions and masks are ``[b, q]`` / ``[b, q, q]``; ``slots[b]`` selects cache rows.
    """

    def __init__(self, model: Qwen3Model, device: torch.device, static_shapes: bool | None = None,
                 cuda_graphs: bool | None = None, compile_layers: bool | None = None):
        """static_shapes: decode forwards run over all slots at fixed shapes (default: on CUDA);
        cuda_graphs: those forwards are captured and replayed as CUDA graphs (default: on CUDA);
        compile_layers: the layer function of those forwards is fused by torch.compile (default:
        with CUDA graphs), cutting ~70 small kernels a layer to a handful."""
        self.model, self.device = model, device
        self.config = model.config
        self.dtype = next(model.parameters()).dtype
        on_cuda = device.type == "cuda"
        self.static_shapes = on_cuda if static_shapes is None else static_shapes
        # A graph needs fixed shapes: graphs follow static_shapes unless asked for explicitly.
        self.cuda_graphs = (self.static_shapes and on_cuda) if cuda_graphs is None else cuda_graphs
        self.static_shapes = self.static_shapes or self.cuda_graphs
        use_compile = self.cuda_graphs if compile_layers is None else compile_layers
        self.layer_fn = compiled_layer() if use_compile else None
        self.cache: KVCache | None = None
        self.static: StaticForwards | None = None
        self.num_forwards = 0        # decoding forwards run (prefill excluded)
        self.num_query_tokens = 0    # query tokens computed by them, idle slots included

    def ensure_cache(self, num_slots: int, max_len: int) -> None:
        """(Re)allocate the cache when the slots or lengths needed exceed what is held."""
        c = self.cache
        if c is None or c.num_slots < num_slots or c.max_len < max_len:
            self.close()  # graphs point at the old cache: free both before allocating
            self.cache = KVCache(self.config, num_slots, max_len, self.device, self.dtype)
            if self.static_shapes:
                self.static = StaticForwards(self.model, self.cache, self.cuda_graphs, self.layer_fn)

    def hidden(self, ids, positions, visible, slots, write=None, cache_lens=None,
               max_cache_len: int | None = None) -> torch.Tensor:
        """A decoding forward of rows ``slots`` against their cache -> hidden [b, q, hidden].

        max_cache_len: a host-side upper bound of the rows' cache lengths; without it the bound is
        read from the device, which waits for every queued kernel.
        """
        lens = self.cache.lengths[slots] if cache_lens is None else cache_lens
        self.num_forwards += 1
        rows = self.cache.num_slots if self.static is not None else ids.shape[0]
        self.num_query_tokens += rows * ids.shape[1]
        if self.static is not None:
            bound = int(lens.max()) if max_cache_len is None else max_cache_len
            forward = self.static.get(ids.shape[1], bound)
            return forward(ids, positions, visible, slots, write, lens)
        batch = ForwardBatch(positions, visible, self.cache, slots, cache_lens=lens, write=write)
        return self.model.hidden(ids, batch)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden)

    def prefill(self, slots: torch.Tensor, prompts: list[list[int]], block: int) -> None:
        """Store K/V of each prompt (block-causal, aligned to position 0) in an emptied slot."""
        self.cache.reset(slots)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        q = int(lengths.max()) if len(prompts) else 0
        if q == 0:
            return
        ids = torch.zeros(len(prompts), q, dtype=torch.long, device=self.device)
        for row, p in enumerate(prompts):
            ids[row, :len(p)] = torch.tensor(p, dtype=torch.long)
        positions = torch.arange(q, device=self.device).expand(len(prompts), q)
        write = positions < lengths[:, None]
        # Variable shapes and an empty cache: an eager forward (prefill happens once per sequence).
        batch = ForwardBatch(positions, layouts.block_causal(lengths, q, block), self.cache, slots,
                             cache_lens=torch.zeros_like(lengths), write=write, cache_span=0)
        self.model.hidden(ids, batch)
        self.cache.lengths[slots] = lengths

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

"""The contract between the driver and the GPU side: decoding settings, requests and results."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DECODERS = ("vanilla", "simsd")
REMASKING = ("sequential", "static", "dynamic")
VERIFY = ("paper", "exact")
ACCEPTANCE = ("auto", "greedy", "mrs")
COMMIT_FOLDING = ("auto", "always", "never")
ADAPTIVE = ("auto", "on", "off")
COMPILE = ("auto", "on", "off")  # torch.compile of the layers inside CUDA graphs (runner.resolve_compile)
ATTENTION_BACKENDS = ("auto", "torch", "triton")  # flex and flex-main were removed (docs/engine.md)
LAYER_KERNELS = ("auto", "torch", "triton")  # the dense layers' matmuls of small forwards and K/V store


@dataclass(slots=True)
class DecodeConfig:
    """How sequences are decoded. Validated on construction; crosses the driver/actor boundary."""

    decoder: str = "vanilla"          # vanilla block diffusion, or SimSD speculative decoding
    remasking: str = "sequential"     # vanilla: which masked positions a step reveals
    threshold: float = 0.9            # dynamic remasking: reveal every position above this confidence
    block_length: int | None = None   # None: the target's trained block_size
    max_new_tokens: int = 256
    temperature: float = 0.0          # 0: greedy
    top_k: int = 0                    # 0: off
    top_p: float = 1.0                # 1: off
    seed: int = 0
    verify: str = "paper"             # simsd: the paper's single-forward layout or exact per-step copies
    acceptance: str = "auto"          # simsd: greedy at temperature 0, mrs above
    draft_remasking: str = "static"   # simsd with an SDAR draft: how the draft reveals its block
    batch_size: int = 32              # sequences decoded together (continuous batching slots)
    commit_folding: str = "auto"      # store a finished block's K/V in the next forward instead of
                                      # a forward of its own (auto: with fixed shapes, per forward where it pays: commits.fold_pays; else when batch x block <= 64 tokens)
    denoising_steps: int | None = None  # steps per block (vanilla and SDAR drafts); None: one token per step
    adaptive: str = "auto"            # simsd exact: run target-only steps while drafting does not pay
                                      # (auto: on with verify exact, off with paper)
    # Engine memory and kernels: change speed only, never tokens.
    max_total_tokens: int | None = None   # cap of the KV pool in tokens (None: from GPU memory / per call on CPU)
    gpu_memory_utilization: float = 0.9   # fraction of GPU memory the engine may use (weights + pool + activations)
    page_size: int | None = None          # KV page size in tokens (None: 128 on CUDA, 16 on CPU)
    attention: str = "auto"               # auto (the measured default), torch or triton
    compile: str = "auto"                 # torch.compile the layers inside CUDA graphs: auto, on, off
    layer_kernels: str = "auto"           # Triton matmuls for forwards of <= 32 tokens and K/V store (auto: on CUDA)

    def __post_init__(self):
        _one_of("decoder", self.decoder, DECODERS)
        _one_of("remasking", self.remasking, REMASKING)
        _one_of("draft_remasking", self.draft_remasking, REMASKING)
        _one_of("verify", self.verify, VERIFY)
        _one_of("acceptance", self.acceptance, ACCEPTANCE)
        _one_of("commit_folding", self.commit_folding, COMMIT_FOLDING)
        _one_of("adaptive", self.adaptive, ADAPTIVE)
        if self.adaptive == "on" and self.verify != "exact":
            raise ValueError("adaptive 'on' needs verify 'exact': a target-only step gives the same tokens as "
                             "exact verification, not as the paper's layout")
        if self.denoising_steps is not None and self.denoising_steps < 1:
            raise ValueError(f"denoising_steps must be >= 1, got {self.denoising_steps}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.block_length is not None and not 1 <= self.block_length <= 256:
            raise ValueError(f"block_length must be in [1, 256], got {self.block_length}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _one_of("attention", self.attention, ATTENTION_BACKENDS)
        _one_of("compile", self.compile, COMPILE)
        _one_of("layer_kernels", self.layer_kernels, LAYER_KERNELS)
        if self.max_total_tokens is not None and self.max_total_tokens < 1:
            raise ValueError(f"max_total_tokens must be >= 1, got {self.max_total_tokens}")
        if not 0.05 <= self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in [0.05, 1], got {self.gpu_memory_utilization}")
        if self.page_size is not None and not 1 <= self.page_size <= 4096:
            raise ValueError(f"page_size must be in [1, 4096], got {self.page_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.acceptance == "greedy" and self.temperature > 0:
            raise ValueError("acceptance 'greedy' needs temperature 0; use 'mrs' or 'auto' when sampling")

    @property
    def adaptive_on(self) -> bool:
        return self.adaptive == "on" or (self.adaptive == "auto" and self.verify == "exact")

    def acceptance_rule(self, temperature: float) -> str:
        if self.acceptance != "auto":
            return self.acceptance
        return "greedy" if temperature == 0 else "mrs"

    def to_dict(self) -> dict:
        return asdict(self)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


MAX_TEMPERATURE = 100.0
MAX_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One row's sampling settings, with vLLM's field names. A Request without them uses the
    job's DecodeConfig (temperature, top_k, top_p, max_new_tokens, seed) and the defaults below.

    n: samples per prompt (the pipeline expands rows; the engine decodes one sample per Request).
    top_k 0 (or -1) and top_p 1 are off. stop: strings that end the text (trimmed before the
    match); stop_token_ids: extra ids that end it (excluded). min_tokens: no stop id or stop
    string before this many tokens. ignore_eos: the model's own stop ids do not stop.
    seed: the row's random stream (with the row id and sample index). logprobs: None = off,
    N >= 0 = each token's log-probability plus the top N alternatives. Penalties follow vLLM
    (repetition: prompt and output tokens, presence: output tokens).
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int = 0
    logprobs: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0

    def problem(self) -> str | None:
        """A message naming the first out-of-range field, or None when every field is valid."""
        checks = (
            (_is_int(self.n) and 1 <= self.n <= 1024, "n must be an integer in [1, 1024]", self.n),
            (_is_num(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
             f"temperature must be a number in [0, {MAX_TEMPERATURE:g}]", self.temperature),
            (_is_num(self.top_p) and 0 < self.top_p <= 1, "top_p must be in (0, 1]", self.top_p),
            (_is_int(self.top_k) and self.top_k >= -1, "top_k must be an integer >= -1 (0 or -1: off)", self.top_k),
            (_is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens must be an integer >= 1", self.max_tokens),
            (_is_int(self.min_tokens) and 0 <= self.min_tokens, "min_tokens must be an integer >= 0", self.min_tokens),
            (_is_int(self.min_tokens) and _is_int(self.max_tokens) and self.min_tokens <= self.max_tokens,
             "min_tokens must be <= max_tokens", self.min_tokens),
            (isinstance(self.stop, tuple) and all(isinstance(x, str) and x for x in self.stop),
             "stop must be a list of non-empty strings", self.stop),
            (isinstance(self.stop_token_ids, tuple) and all(_is_int(x) and x >= 0 for x in self.stop_token_ids),
             "stop_token_ids must be a list of token ids >= 0", self.stop_token_ids),
            (isinstance(self.ignore_eos, bool), "ignore_eos must be true or false", self.ignore_eos),
            (_is_int(self.seed) and 0 <= self.seed < 2 ** 63, "seed must be an integer in [0, 2^63)", self.seed),
            (self.logprobs is None or (_is_int(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS),
             f"logprobs must be an integer in [0, {MAX_LOGPROBS}]", self.logprobs),
            (_is_num(self.repetition_penalty) and 0 < self.repetition_penalty <= 10,
             "repetition_penalty must be in (0, 10]", self.repetition_penalty),
            (_is_num(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
             "presence_penalty must be in [-2, 2]", self.presence_penalty),
        )
        for ok, message, value in checks:
            if not ok:
                return f"{message}, got {value!r}"
        return None

    @property
    def needs_processing(self) -> bool:
        """Whether the logits need per-row processing beyond temperature/top-k/top-p."""
        return self.min_tokens > 0 or self.repetition_penalty != 1.0 or self.presence_penalty != 0.0

    @classmethod
    def from_decode(cls, decode: "DecodeConfig") -> "SamplingParams":
        return cls(temperature=decode.temperature, top_p=decode.top_p, top_k=decode.top_k,
                   max_tokens=decode.max_new_tokens, seed=decode.seed)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and abs(value) != float("inf"))


@dataclass(slots=True)
class Request:
    id: Any
    prompt_ids: list[int]
    max_new_tokens: int | None = None   # per-row override of DecodeConfig.max_new_tokens
    temperature: float | None = None    # per-row override of DecodeConfig.temperature
    params: SamplingParams | None = None  # per-row sampling settings (None: the DecodeConfig's)
    sample_index: int = 0               # which of the row's n samples this is
    row_id: Any = None                  # the row's stable id for its random stream (None: ``id``)


@dataclass(slots=True)
class Result:
    id: Any
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"       # stop | length | error
    error: str | None = None
    sample_index: int = 0
    stop_reason: str | None = None      # the stop string, or the stop token id (as text), that matched
    logprobs: list[dict] | None = None  # per token: token_id, logprob, top_token_ids, top_logprobs
    text: str | None = None             # the text trimmed before a stop string (None: decode token_ids)
    num_input_tokens: int = 0
    num_rounds: int = 0                 # denoising steps (vanilla) or speculative rounds (simsd)
    num_drafted_tokens: int = 0
    num_accepted_tokens: int = 0
    num_target_forwards: int = 0
    num_draft_forwards: int = 0
    num_preemptions: int = 0            # times the row was preempted (KV pool full) and recomputed
    num_undrafted_rounds: int = 0       # simsd rounds the target decoded alone (adaptive: drafting did not pay)
    time_taken_s: float = 0.0

    @property
    def num_generated_tokens(self) -> int:
        return len(self.token_ids)

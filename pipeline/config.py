"""The one typed job config: built from CLI flags and/or a YAML file, validated where it is built.

Every field carries its description in ``metadata["help"]``; the CLI parser is generated from
these fields so flags, YAML keys and the dataclass can never drift apart.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .cli_parser import Parser
from .errors import ConfigError
from .locations import is_inside, normalize
from workers.api import (ACCEPTANCE, ADAPTIVE, ATTENTION_BACKENDS, COMMIT_FOLDING, COMPILE, DECODERS, LAYER_KERNELS,
                         REMASKING, VERIFY, DecodeConfig)
from workers.row_params import PROMPT
from .sampling_params import SAMPLING_FLAGS, int_list, job_sampling_params

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Fields that change what a row's generation is; a resume must match them all.
_FINGERPRINT_FIELDS = ("input", "target", "draft", "id_column", "prompt_column", "messages_column",
                       "no_chat_template", "dtype", "keep_columns", "keep_prompt", *SAMPLING_FLAGS)
# Decode fields that only change speed, not outputs.
_DECODE_SPEED_ONLY = ("batch_size", "commit_folding", "adaptive", "max_total_tokens", "gpu_memory_utilization", "page_size",
                      "attention", "compile", "layer_kernels")


def _f(default, help: str, choices=None, flag_type=None):
    meta = {"help": help, "choices": choices, "type": flag_type}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GenerateConfig:
    """Everything one `simsd generate` run needs. CLI flags use the field names with dashes."""

    input: str | None = _f(None, "Parquet file or directory of prompts: local path, file://, s3:// or any fsspec URL")
    output: str | None = _f(None, "output directory (data files, summary.parquet, _job.json); required with --input, "
                                  "never inside it (the demo writes ./simsd-demo-output)")
    target: str | None = _f(None, "target SDAR checkpoint: local dir, fsspec URL or hub id")
    draft: str | None = _f(None, "draft checkpoint for --decoder simsd (same tokenizer as the target)")
    decoder: str | None = _f(None, "vanilla block diffusion, simsd speculative decoding, or auto: the fastest lossless "
                                   "choice (simsd exact with adaptive rounds when --draft is given, else vanilla "
                                   "sequential; the summary says which). Default: simsd when --draft is given, else "
                                   "vanilla; --decoder vanilla with --draft is refused", (*DECODERS, "auto"))
    remasking: str = _f("sequential", "vanilla: which masked positions a denoising step reveals", REMASKING)
    threshold: float = _f(0.9, "dynamic remasking: reveal every position above this confidence", flag_type=float)
    block_length: int | None = _f(None, "diffusion block length (default: the target's trained block size)", flag_type=int)
    max_new_tokens: int = _f(256, "default generation budget per row (a max_new_tokens column overrides it)", flag_type=int)
    temperature: float = _f(0.0, "sampling temperature, 0 = greedy (a temperature column overrides it)", flag_type=float)
    top_k: int = _f(0, "top-k sampling, 0 = off", flag_type=int)
    top_p: float = _f(1.0, "nucleus sampling, 1 = off", flag_type=float)
    seed: int = _f(0, "random seed for sampling: a row's stream derives from (seed, row id, sample index)", flag_type=int)
    n: int = _f(1, "samples per prompt (output rows carry sample_index 0..n-1)", flag_type=int)
    stop: list = _f([], "stop string (repeatable): the text ends before the first match (default: none)")
    stop_token_ids: list = _f([], "comma-separated token ids that end a row besides the model's stop ids (default: none)")
    min_tokens: int = _f(0, "no stop id or stop string ends a row before this many tokens", flag_type=int)
    ignore_eos: bool = _f(False, "the model's own stop ids do not end a row (--stop-token-ids still do)")
    logprobs: int | None = _f(None, "add a logprobs column: each token's log-probability plus the top N alternatives (default: off)", flag_type=int)
    repetition_penalty: float = _f(1.0, "vLLM repetition penalty over prompt and generated tokens, 1 = off", flag_type=float)
    presence_penalty: float = _f(0.0, "vLLM presence penalty over generated tokens, 0 = off", flag_type=float)
    verify: str | None = _f(None, "simsd: exact per-step copies (lossless: the target's own sequential tokens; the default) or the paper's single-forward layout (approximate, named only)", VERIFY)
    acceptance: str = _f("auto", "simsd: greedy at temperature 0, mrs (rejection sampling) above", ACCEPTANCE)
    draft_remasking: str | None = _f(None, "simsd with an SDAR draft: how the draft reveals its block (default: "
                                           "sequential when sampling - temperature > 0 or --acceptance mrs - the "
                                           "lossless combination with MRS; static at temperature 0)", REMASKING)
    id_column: str = _f("id", "input column with a stable unique row id")
    prompt_column: str | None = _f(None, "input column with the text prompt (default: prompt; with neither this nor "
                                         "--messages-column set, an input with a messages column and no prompt "
                                         "column is read as chat, as Ray Data LLM does)")
    messages_column: str | None = _f(None, "input column with chat messages (list of {role, content}); used instead of the prompt column")
    no_chat_template: bool = _f(False, "encode text prompts raw instead of through the tokenizer's chat template")
    keep_columns: str | None = _f(None, "comma-separated input columns to carry to the output (default: every input "
                                        "column the job does not consume; '' keeps none)")
    keep_prompt: bool = _f(False, "also carry the prompt (or messages) column to the output (off: prompts can be large)")
    batch_size: int = _f(32, "sequences decoded together per worker (continuous batching slots)", flag_type=int)
    denoising_steps: int | None = _f(None, "denoising steps per block for vanilla decoding and SDAR drafts (default: the block length, one token per step); fewer steps reveal ceil(masked / steps left) tokens per step", flag_type=int)
    adaptive: str = _f("auto", "simsd exact: run target-only steps (same tokens) while drafting does not pay, re-probing now and then (auto: on with --verify exact, off with paper)", ADAPTIVE)
    commit_folding: str = _f("auto", "store a finished block's K/V in the next forward instead of an extra forward (auto: on a GPU, per forward, where computing the block for every row costs less than a forward of its own; on CPU when batch x block <= 64 tokens)", COMMIT_FOLDING)
    max_total_tokens: int | None = _f(None, "cap of the KV pool in tokens (default: what --gpu-memory-utilization leaves on the GPU; on CPU, sized to each batch); rows wait or are preempted when it is full", flag_type=int)
    gpu_memory_utilization: float = _f(0.9, "fraction of GPU memory the engine may use for weights, KV pool and activations", flag_type=float)
    page_size: int | None = _f(None, "KV pool page size in tokens (default: 128 on cuda, 16 on cpu)", flag_type=int)
    attention: str = _f("auto", "attention backend over the KV pool: torch (plain PyTorch), triton (one Triton kernel; cuda); auto: the one measured fastest (docs/engine.md)", ATTENTION_BACKENDS)
    compile: str = _f("auto", "fuse each layer with torch.compile inside the CUDA graphs (cuda): faster decoding for seconds of compilation at start-up, cached in --compile-cache-dir; auto: the measured default (docs/engine.md)", COMPILE)
    layer_kernels: str = _f("auto", "the dense layers' Triton kernels (cuda): a weight-streaming matmul for forwards of at most 32 tokens (batch-1 and small-batch decoding) with the residual add fused, and a one-kernel K/V store; torch: cuBLAS and PyTorch indexing; auto: triton on cuda with a bf16/fp16 model (docs/engine.md)", LAYER_KERNELS)
    workers: int | None = _f(None, "number of engine actors (default: GPUs in the cluster on cuda, 1 on cpu)", flag_type=int)
    gpus_per_worker: float | None = _f(None, "GPUs reserved per actor (default: 1 on cuda, 0 on cpu)", flag_type=float)
    device: str = _f("auto", "where the engine runs (auto: cuda when available)", DEVICES)
    dtype: str = _f("auto", "model weights dtype (auto: bfloat16 on cuda, float32 on cpu)", DTYPES)
    address: str | None = _f(None, "Ray cluster to run on: 'auto', host:port or ray://host:port (default: $RAY_ADDRESS "
                                   "when set, as under ray job submit; else a private local Ray, never a running one)")
    placement_timeout_s: float = _f(300.0, "fail, naming the missing resources, when the engine actors cannot all be "
                                           "placed and started (model load included) within this many seconds",
                                    flag_type=float)
    storage_options: dict = _f({}, "JSON object of fsspec storage options for URLs (e.g. endpoint_url, key, secret); never written out")
    overwrite: bool = _f(False, "replace an output written with a different config instead of refusing")
    resume_anyway: bool = _f(False, "resume an output although --input/--target/--draft paths or --keep-columns/"
                                    "--keep-prompt changed (moved data or models; rows already written are kept)")
    compile_cache_dir: str | None = _f(None, "directory for compiled kernels (torch.compile, Triton), kept between runs so a job's start-up skips compilation (default: ~/.cache/simsd/compile)")
    verbose: bool = _f(False, "show every log line and warning (default: known harmless ones are hidden)")
    progress_interval_s: float = _f(10.0, "seconds between progress lines (rows, tokens/s, acceptance, ETA)",
                                    flag_type=float)
    max_batch_retries: int = _f(2, "times a batch whose worker died is run again before it is bisected down to the row that kills it (written as an error row)", flag_type=int)
    stall_timeout_s: float = _f(1800.0, "fail the job when no row has finished for this long (model load included); rows written so far are kept", flag_type=float)
    cpus_per_worker: float | None = _f(None, "CPUs reserved per engine actor (default: up to 1, always leaving one CPU of the cluster for reading and writing)", flag_type=float)
    lease_timeout_s: float = _f(120.0, "a writer lease on --output whose heartbeat is older than this may be taken over by a new run", flag_type=float)

    def __post_init__(self):
        if isinstance(self.keep_columns, (list, tuple)):  # YAML may give a list
            self.keep_columns = ",".join(str(c) for c in self.keep_columns)
        self._check_types()
        self._resolve_decoder()
        self._resolve_draft_remasking()
        self.decode = self._build_decode()
        self.sampling = job_sampling_params(self)
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        self._check_limits()
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if not isinstance(self.storage_options, dict):
            raise ConfigError("--storage-options must be a JSON object")
        if self.decoder == "simsd" and self.draft is None and self.target is not None:
            raise ConfigError("--decoder simsd needs --draft")
        self._check_locations()
        for flag, value in (("--placement-timeout-s", self.placement_timeout_s),
                            ("--progress-interval-s", self.progress_interval_s)):
            if value <= 0:
                raise ConfigError(f"{flag} must be > 0, got {value}")
        for name in ("device", "dtype"):
            allowed = DEVICES if name == "device" else DTYPES
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def _check_limits(self) -> None:
        if self.max_batch_retries < 0:
            raise ConfigError(f"--max-batch-retries must be >= 0, got {self.max_batch_retries}")
        if self.stall_timeout_s <= 0:
            raise ConfigError(f"--stall-timeout-s must be > 0, got {self.stall_timeout_s}")
        if self.cpus_per_worker is not None and self.cpus_per_worker < 0:
            raise ConfigError(f"--cpus-per-worker must be >= 0, got {self.cpus_per_worker}")
        if self.lease_timeout_s <= 0:
            raise ConfigError(f"--lease-timeout-s must be > 0, got {self.lease_timeout_s}")

    def _resolve_decoder(self) -> None:
        """--draft alone means auto (lossless, the fastest choice); --verify paper names the
        approximate layout; --decoder vanilla with a --draft would silently ignore it."""
        if self.decoder is None:
            if self.draft is None:
                self.decoder = "vanilla"
            elif self.verify == "paper" or self.adaptive == "off":
                self.decoder = "simsd"  # a SimSD variant the user named: run it as asked
            else:
                self._resolve_auto()
        elif self.decoder == "auto":
            self._resolve_auto()
        elif self.decoder == "vanilla" and self.draft is not None:
            raise ConfigError(f"--draft {self.draft} is only used by --decoder simsd, but --decoder vanilla was given; "
                              "drop --draft, or drop --decoder (--draft alone picks the fastest lossless decoder)")
        if self.verify is None:
            self.verify = "exact"  # lossless unless the paper's layout is named

    def _resolve_draft_remasking(self) -> None:
        """No --draft-remasking given: left to right when sampling (with MRS acceptance, the
        combination that keeps the target's distribution; docs/sampling.md), static when greedy."""
        if self.draft_remasking is not None:
            return
        sampling = self.temperature > 0 or self.acceptance == "mrs"
        self.draft_remasking = "sequential" if sampling else "static"
        if sampling and self.draft is not None:
            self.sampling_choice = ("sampling with a draft: the draft reveals its block left to right "
                                    "(--draft-remasking sequential) and acceptance is MRS, the lossless combination"
                                    + (" with --verify exact" if self.verify != "exact" else "")
                                    + "; pass --draft-remasking to choose another order")

    def _resolve_auto(self) -> None:
        """--decoder auto: the lossless decoder expected fastest, and why (reported in the summary)."""
        if self.remasking != "sequential":
            raise ConfigError(f"--decoder auto picks a lossless decoder, but --remasking {self.remasking} is lossy; "
                              "use --decoder vanilla for it")
        if self.draft is None:
            if self.denoising_steps is not None:
                raise ConfigError("--decoder auto without --draft decodes vanilla sequential, one token per step; "
                                  "--denoising-steps (several tokens a step) is lossy: use --decoder vanilla for it")
            self.decoder = "vanilla"
            self.decoder_choice = "vanilla sequential: no --draft, so the target decodes one token per step"
            return
        if self.adaptive == "off":
            raise ConfigError("--decoder auto decides per round whether drafting pays; drop --adaptive off")
        if self.verify == "paper":
            raise ConfigError("--decoder auto is lossless, but --verify paper is approximate; use --decoder simsd "
                              "--verify paper for it")
        self.decoder, self.verify = "simsd", "exact"
        self.decoder_choice = ("simsd exact with adaptive rounds: drafts while the measured tokens per second beat "
                               "the target alone, target-only steps otherwise (same tokens either way)")

    def _check_locations(self) -> None:
        if self.input is not None and self.output is not None and is_inside(self.output, self.input):
            raise ConfigError(f"--output {self.output} is inside --input {self.input}: the results would be read "
                              "as input by the next run; choose an --output outside the input directory")

    def _check_types(self) -> None:
        """YAML can hold any type: each setting must have its declared one (ints for floats are fine)."""
        for f in fields(self):
            value, kind, flag = getattr(self, f.name), f.metadata["type"], _flag(f.name)
            if f.name in ("storage_options", "stop", "stop_token_ids"):
                continue  # checked in __post_init__ (the lists by pipeline.sampling_params)
            if value is None:
                if f.default is None:
                    continue  # optional setting
                raise ConfigError(f"{flag} needs a value")
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{flag} must be true or false, got {value!r}")
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{flag} must be an integer, got {value!r}")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"{flag} must be a finite number, got {value!r}")
                setattr(self, f.name, float(value))
            elif not isinstance(value, str):
                raise ConfigError(f"{flag} must be a string, got {value!r}")

    def _build_decode(self) -> DecodeConfig:
        # DecodeConfig fields without a job setting (yet) keep the engine's defaults.
        names = [f.name for f in fields(DecodeConfig) if f.name in self.__dataclass_fields__]
        try:
            return DecodeConfig(**{n: getattr(self, n) for n in names})
        except (ValueError, TypeError) as err:
            raise ConfigError(_name_flags(str(err), names)) from None

    def fingerprint(self) -> str:
        """Hash of the settings that decide what each row's output is (not speed, not credentials)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> dict:
        decode = {k: v for k, v in self.decode.to_dict().items() if k not in _DECODE_SPEED_ONLY}
        out = {**{k: getattr(self, k) for k in _FINGERPRINT_FIELDS}, **decode}
        out["prompt_column"] = self.prompt_column or PROMPT  # unset reads `prompt`, as the default once did
        # Resume compares locations, not spellings: prompts/, ./prompts and /abs/prompts are one input.
        out.update(input=normalize(self.input), target=normalize(self.target, local_only_if_exists=True),
                   draft=normalize(self.draft, local_only_if_exists=True))
        return out

    def public_dict(self) -> dict:
        """The config without credentials, for logs and the summary."""
        out = {k: v for k, v in asdict(self).items() if k != "storage_options"}
        out["storage_options"] = sorted(self.storage_options)  # keys only
        return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _name_flags(message: str, names: list[str]) -> str:
    """'max_new_tokens must be >= 1' -> '--max-new-tokens must be >= 1': users type flags, not fields."""
    pattern = r"(?<![-\w])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda m: _flag(m.group(1)), message)


_DESCRIPTION = """Batch generation with SDAR / SimSD on Ray: Parquet prompts in, Parquet generations out.

Demo mode: with neither --input nor --target, runs built-in prompts through the reference models in
models/reference/ (or tiny random models when absent) and writes ./simsd-demo-output, replacing it."""


def build_parser(prog: str = "simsd generate") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    for f in fields(GenerateConfig):
        meta = f.metadata
        # default=SUPPRESS: only flags the user typed land in the namespace, so YAML values survive.
        if f.type in (bool, "bool"):
            parser.add_argument(_flag(f.name), action="store_true", default=argparse.SUPPRESS, help=meta["help"])
        elif f.name == "storage_options":
            parser.add_argument(_flag(f.name), type=_json_object, default=argparse.SUPPRESS, help=meta["help"])
        elif f.name == "stop":
            parser.add_argument(_flag(f.name), action="append", default=argparse.SUPPRESS, help=meta["help"])
        elif f.name == "stop_token_ids":
            parser.add_argument(_flag(f.name), type=int_list, default=argparse.SUPPRESS, help=meta["help"])
        else:
            parser.add_argument(_flag(f.name), type=meta["type"] or str, choices=meta["choices"],
                                default=argparse.SUPPRESS, help=_with_default(f))
    return parser


def _with_default(f) -> str:
    """The help text plus the default, unless the text already explains a computed one."""
    if f.default is None or "default:" in f.metadata["help"]:
        return f.metadata["help"]
    return f"{f.metadata['help']} (default: {f.default})"


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def load_yaml(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read --config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def from_mapping(values: dict) -> GenerateConfig:
    known = {f.name for f in fields(GenerateConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return GenerateConfig(**values)
    except TypeError as err:
        raise ConfigError(str(err)) from None


def parse_args(argv: list[str] | None, prog: str = "simsd generate") -> GenerateConfig:
    """CLI flags over YAML over defaults -> a validated GenerateConfig (ConfigError on bad values)."""
    ns = vars(build_parser(prog).parse_args(argv))
    values = load_yaml(ns.pop("config")) if ns.get("config") else {}
    ns.pop("config", None)
    values.update(ns)
    return from_mapping(values)


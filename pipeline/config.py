"""The one typed job config: built from CLI flags and/or a YAML file, validated where it is built.

Every field carries its description in ``metadata["help"]``; the CLI parser is generated from
these fields so flags, YAML keys and the dataclass can never drift apart.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from workers.api import ACCEPTANCE, COMMIT_FOLDING, DECODERS, REMASKING, VERIFY, DecodeConfig

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Fields that change what a row's generation is; a resume must match them all.
_FINGERPRINT_FIELDS = ("input", "target", "draft", "id_column", "prompt_column", "messages_column",
                       "no_chat_template", "dtype")
# Decode fields that only change speed, not outputs.
_DECODE_SPEED_ONLY = ("batch_size", "commit_folding")


class ConfigError(ValueError):
    """A job config that cannot run; the message names the offending setting."""


def _f(default, help: str, choices=None, flag_type=None):
    meta = {"help": help, "choices": choices, "type": flag_type}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GenerateConfig:
    """Everything one `simsd generate` run needs. CLI flags use the field names with dashes."""

    input: str | None = _f(None, "Parquet file or directory of prompts: local path, file://, s3:// or any fsspec URL")
    output: str = _f("./simsd-demo-output", "output directory (data files, summary.parquet, _job.json)")
    target: str | None = _f(None, "target SDAR checkpoint: local dir, fsspec URL or hub id")
    draft: str | None = _f(None, "draft checkpoint for --decoder simsd (same tokenizer as the target)")
    decoder: str = _f("vanilla", "vanilla block diffusion, or simsd speculative decoding", DECODERS)
    remasking: str = _f("sequential", "vanilla: which masked positions a denoising step reveals", REMASKING)
    threshold: float = _f(0.9, "dynamic remasking: reveal every position above this confidence", flag_type=float)
    block_length: int | None = _f(None, "diffusion block length (default: the target's trained block size)", flag_type=int)
    max_new_tokens: int = _f(256, "default generation budget per row (a max_new_tokens column overrides it)", flag_type=int)
    temperature: float = _f(0.0, "sampling temperature, 0 = greedy (a temperature column overrides it)", flag_type=float)
    top_k: int = _f(0, "top-k sampling, 0 = off", flag_type=int)
    top_p: float = _f(1.0, "nucleus sampling, 1 = off", flag_type=float)
    seed: int = _f(0, "random seed for sampling", flag_type=int)
    verify: str = _f("paper", "simsd: the paper's single-forward verification layout or exact per-step copies", VERIFY)
    acceptance: str = _f("auto", "simsd: greedy at temperature 0, mrs (rejection sampling) above", ACCEPTANCE)
    draft_remasking: str = _f("static", "simsd with an SDAR draft: how the draft reveals its block", REMASKING)
    id_column: str = _f("id", "input column with a stable unique row id")
    prompt_column: str = _f("prompt", "input column with the text prompt")
    messages_column: str | None = _f(None, "input column with chat messages (list of {role, content}); used instead of the prompt column")
    no_chat_template: bool = _f(False, "encode text prompts raw instead of through the tokenizer's chat template")
    batch_size: int = _f(32, "sequences decoded together per worker (continuous batching slots)", flag_type=int)
    commit_folding: str = _f("auto", "store a finished block's K/V in the next forward instead of an extra forward (auto: when batch x block <= 64 tokens)", COMMIT_FOLDING)
    workers: int | None = _f(None, "number of engine actors (default: GPUs in the cluster on cuda, 1 on cpu)", flag_type=int)
    gpus_per_worker: float | None = _f(None, "GPUs reserved per actor (default: 1 on cuda, 0 on cpu)", flag_type=float)
    device: str = _f("auto", "where the engine runs (auto: cuda when available)", DEVICES)
    dtype: str = _f("auto", "model weights dtype (auto: bfloat16 on cuda, float32 on cpu)", DTYPES)
    storage_options: dict = _f({}, "JSON object of fsspec storage options for URLs (e.g. endpoint_url, key, secret); never written out")
    overwrite: bool = _f(False, "replace an output written with a different config instead of refusing")

    def __post_init__(self):
        self._check_types()
        self.decode = self._build_decode()
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if not isinstance(self.storage_options, dict):
            raise ConfigError("--storage-options must be a JSON object")
        if self.decoder == "simsd" and self.draft is None and self.target is not None:
            raise ConfigError("--decoder simsd needs --draft")
        for name in ("device", "dtype"):
            allowed = DEVICES if name == "device" else DTYPES
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def _check_types(self) -> None:
        """YAML can hold any type: each setting must have its declared one (ints for floats are fine)."""
        for f in fields(self):
            value, kind, flag = getattr(self, f.name), f.metadata["type"], _flag(f.name)
            if f.name == "storage_options":
                continue  # checked in __post_init__
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
        names = [f.name for f in fields(DecodeConfig)]
        try:
            return DecodeConfig(**{n: getattr(self, n) for n in names})
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None

    def fingerprint(self) -> str:
        """Hash of the settings that decide what each row's output is (not speed, not credentials)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> dict:
        decode = {k: v for k, v in self.decode.to_dict().items() if k not in _DECODE_SPEED_ONLY}
        return {**{k: getattr(self, k) for k in _FINGERPRINT_FIELDS}, **decode}

    def public_dict(self) -> dict:
        """The config without credentials, for logs and the summary."""
        out = {k: v for k, v in asdict(self).items() if k != "storage_options"}
        out["storage_options"] = sorted(self.storage_options)  # keys only
        return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """Bad flags raise ConfigError (one error path, one exit code) instead of exiting here."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser(prog: str = "simsd generate") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Batch generation with SDAR / SimSD on Ray.")
    parser.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    for f in fields(GenerateConfig):
        meta = f.metadata
        # default=SUPPRESS: only flags the user typed land in the namespace, so YAML values survive.
        if f.type in (bool, "bool"):
            parser.add_argument(_flag(f.name), action="store_true", default=argparse.SUPPRESS, help=meta["help"])
        elif f.name == "storage_options":
            parser.add_argument(_flag(f.name), type=_json_object, default=argparse.SUPPRESS, help=meta["help"])
        else:
            parser.add_argument(_flag(f.name), type=meta["type"] or str, choices=meta["choices"],
                                default=argparse.SUPPRESS, help=meta["help"])
    return parser


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


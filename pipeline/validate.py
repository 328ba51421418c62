"""Fail fast, before any actor or GPU is reserved: inputs, columns, models, tokenizers, output.

Every check raises ConfigError with a message that names the problem; jobs/ turns that into
`simsd generate: error: ...` and a nonzero exit. Problems that do not stop a job (a block length
the target was not trained for) come back as warning strings.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workers.models.config import ModelLoadError
from workers.row_params import MESSAGES, PROMPT
from . import sampling_params
from .columns import is_auto, text_columns
from .config import ConfigError, GenerateConfig
from .devices import check_device
from .resume import check_resumable, read_job_file
from .storage import list_parquet, open_fs, retry

# Per-row override columns and the Arrow types they may have (null: every row uses the flag).
_OVERRIDE_TYPES = {"max_new_tokens": pa.types.is_integer,
                   "temperature": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)}
_MAX_SHOWN = 5


def validate(config: GenerateConfig) -> list[str]:
    """Raise ConfigError on the first problem that stops the job; return warnings."""
    check_device(config)  # a missing GPU or a CUDA-only setting on CPU: before reading anything
    check_input(config)
    warnings = validate_models(config)
    check_output(config)
    return warnings


def validate_models(config: GenerateConfig, in_process: bool = False) -> list[str]:
    """The device and model checks alone (target, draft, their vocabularies, the block length):
    what ``build_processor`` and ``simsd.LLM`` (``in_process``) run, where the input is the user's
    own and there is no output."""
    check_device(config, in_process)
    warnings: list[str] = []
    target_cfg, tokenizer = check_model("--target", config.target, config)
    warnings += check_block_length(target_cfg, config)
    check_stop_token_ids(config, target_cfg)
    draft_cfg = None
    if config.draft is not None:
        draft_cfg, draft_tokenizer = check_model("--draft", config.draft, config)
        check_same_vocab(tokenizer, draft_tokenizer, config, target_cfg, draft_cfg)
        check_lossless_sampling(config, draft_cfg)
    check_fits_gpu(config, target_cfg, draft_cfg, _local_gpu_bytes())
    check_batch_fits(config, target_cfg, draft_cfg, _local_gpu_bytes())
    return warnings


def check_batch_fits(config: GenerateConfig, target_cfg, draft_cfg, gpu_bytes: int | None) -> None:
    """--batch-size against memory (pipeline.memory_check): the local GPU's, or on CPU this
    host's available RAM shared by its workers. Nothing to check against on a remote cluster."""
    import os

    from .memory_check import check_batch_memory, host_available_bytes

    if gpu_bytes is not None and config.device != "cpu":
        budget = int(gpu_bytes * config.gpu_memory_utilization)
        check_batch_memory(config, target_cfg, draft_cfg, "cuda", budget,
                           f"the GPU ({gpu_bytes / 2**30:.1f} GiB x --gpu-memory-utilization "
                           f"{config.gpu_memory_utilization:g})")
        return
    if config.device == "cuda" or config.address or os.environ.get("RAY_ADDRESS"):
        return  # the engines run elsewhere: their memory is not known here
    available = host_available_bytes()
    workers = config.workers or 1
    if available is not None:
        check_batch_memory(config, target_cfg, draft_cfg, "cpu", available // workers,
                           f"this host's available memory{f' per worker ({workers} workers)' if workers > 1 else ''}")


def _local_gpu_bytes() -> int | None:
    """Memory of this machine's first GPU, or None without one (a driver on a CPU-only head node
    cannot check, and the engine then reports its pool size when it starts)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory
    except Exception:  # noqa: BLE001 - no usable CUDA here: nothing to check against
        pass
    return None


def check_fits_gpu(config: GenerateConfig, target_cfg, draft_cfg, device_bytes: int | None) -> None:
    """Refuse (exit 2) a target plus draft that cannot hold even a minimal KV pool on the GPU."""
    from workers.models.memory import MIN_KV_TOKENS, fit_error

    if device_bytes is None or config.device == "cpu":
        return
    dtype_bytes = 4 if config.dtype == "float32" else 2
    message = fit_error(target_cfg, device_bytes, MIN_KV_TOKENS, dtype_bytes, name="--target")
    if message is None and draft_cfg is not None:
        # The draft's weights and pool share the GPU: check the pair against what the target leaves.
        from workers.models.memory import kv_bytes_per_token, weight_bytes

        left = device_bytes - weight_bytes(target_cfg, dtype_bytes) - MIN_KV_TOKENS * kv_bytes_per_token(target_cfg, dtype_bytes)
        message = fit_error(draft_cfg, left, MIN_KV_TOKENS, dtype_bytes, name="--target with --draft")
    if message:
        raise ConfigError(message)


def check_stop_token_ids(config: GenerateConfig, target_cfg) -> None:
    """--stop-token-ids must be ids of the target's vocabulary (an id past it fails every row)."""
    bad = [i for i in config.stop_token_ids or () if not 0 <= int(i) < target_cfg.vocab_size]
    if bad:
        raise ConfigError(f"--stop-token-ids {','.join(map(str, bad))}: outside the target's vocabulary "
                          f"(token ids 0..{target_cfg.vocab_size - 1}, config.json vocab_size {target_cfg.vocab_size})")


def check_lossless_sampling(config: GenerateConfig, draft_cfg) -> None:
    """Refuse job-wide sampling where MRS cannot keep the target's distribution (docs/sampling.md)."""
    from workers.decoding.acceptance import mrs_refusal

    problem = mrs_refusal(draft_cfg.is_diffusion, config.draft_remasking) if config.temperature > 0 else None
    if problem:
        raise ConfigError(f"{problem}; drop --draft-remasking (simsd then picks sequential when sampling) or pass "
                          "--draft-remasking sequential")


def check_input(config: GenerateConfig) -> None:
    if not config.input:
        raise ConfigError("--input is required")
    try:
        fs, path = open_fs(config.input, config.storage_options)
        if not retry(fs.exists, path):
            raise ConfigError(f"--input {config.input} does not exist")
        files = list_parquet(fs, path)
    except ConfigError:
        raise
    except Exception as err:  # permissions, bad endpoint, unknown protocol
        raise ConfigError(f"--input {config.input} is not readable ({type(err).__name__}: {err})") from None
    if not files:
        raise ConfigError(f"--input {config.input} holds no .parquet files")
    schemas = {file: _schema(fs, file, config.input) for file in files}
    text_columns(config, {name for schema in schemas.values() for name in schema.names})  # not both
    for file, schema in schemas.items():
        check_columns(list(schema.names), config, where="" if len(files) == 1 else f" file {file}")
        check_column_types(schema, config, where=f" file {file}")
    _check_same_id_type(schemas, config)
    check_ids(fs, files, config)


def _schema(fs, file: str, url: str) -> pa.Schema:
    # Only the footer is read: the schema, never the data.
    def read():
        with fs.open(file, "rb") as f:
            return pq.read_schema(f)
    try:
        return retry(read)
    except Exception as err:
        raise ConfigError(f"--input {url}: {file} is not a readable Parquet file ({err})") from None


def check_columns(names: list[str], config: GenerateConfig, where: str = "", source: str = "--input") -> None:
    """The id column and the prompt column (``source``: what the columns are of, for the message)."""
    if config.id_column not in names:
        raise ConfigError(f"{source}{where} has no id column {config.id_column!r} (columns: {', '.join(names)}); "
                          f"pass --id-column")
    prompt, messages = text_columns(config, names, source)
    if (messages or prompt) in names:
        return
    if is_auto(config):
        raise ConfigError(f"{source}{where} has no column {PROMPT!r} or {MESSAGES!r} (columns: {', '.join(names)}); "
                          "pass --prompt-column (text) or --messages-column (chat)")
    flag = "--messages-column" if messages else "--prompt-column"
    raise ConfigError(f"{source}{where} has no column {messages or prompt!r} (columns: {', '.join(names)}); "
                      f"pass {flag}")


def check_column_types(schema: pa.Schema, config: GenerateConfig, where: str = "") -> None:
    """Types that cannot work for any row: a config error, not one error per row."""
    id_type = schema.field(config.id_column).type
    if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise ConfigError(f"--input{where}: id column {config.id_column!r} has type {id_type}; "
                          "it must hold integers or strings")
    prompt, messages = text_columns(config, schema.names)
    if messages:
        mtype = schema.field(messages).type
        if not pa.types.is_null(mtype) and not _is_messages_type(mtype):
            raise ConfigError(f"--input{where}: messages column {messages!r} has type {mtype}; "
                              "it must be a list of structs with string fields 'role' and 'content'")
    else:
        ptype = schema.field(prompt).type
        if not (pa.types.is_string(ptype) or pa.types.is_large_string(ptype) or pa.types.is_null(ptype)):
            raise ConfigError(f"--input{where}: prompt column {prompt!r} has type {ptype}; "
                              "it must hold strings (for chat messages use --messages-column)")
    problem = sampling_params.check_column_type(schema, where)
    if problem:
        raise ConfigError(problem)
    for name, ok in _OVERRIDE_TYPES.items():
        if name in schema.names:
            otype = schema.field(name).type
            if not (pa.types.is_null(otype) or ok(otype)):
                raise ConfigError(f"--input{where}: per-row override column {name!r} has type {otype}; "
                                  f"it must be {'an integer' if name == 'max_new_tokens' else 'a number'} column")


def _is_messages_type(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    item = t.value_type
    if not pa.types.is_struct(item):
        return False
    names = {item.field(i).name: item.field(i).type for i in range(item.num_fields)}
    return all(k in names and (pa.types.is_string(names[k]) or pa.types.is_large_string(names[k])
                               or pa.types.is_null(names[k])) for k in ("role", "content"))


def _check_same_id_type(schemas: dict, config: GenerateConfig) -> None:
    kinds = {("int" if pa.types.is_integer(s.field(config.id_column).type) else "str") for s in schemas.values()}
    if len(kinds) > 1:
        raise ConfigError(f"--input: id column {config.id_column!r} holds integers in some files and strings "
                          "in others; use one type")


def check_ids(fs, files: list[str], config: GenerateConfig) -> None:
    """Every id non-null and unique. Reads only the id column."""
    def read(file):
        with fs.open(file, "rb") as f:
            return pq.read_table(f, columns=[config.id_column]).column(0)
    try:
        chunks = [retry(read, file) for file in files]
    except Exception as err:
        raise ConfigError(f"--input {config.input}: cannot read the id column ({type(err).__name__}: {err})") from None
    target = pa.int64() if pa.types.is_integer(chunks[0].type) else pa.large_string()
    ids = pa.chunked_array([c.cast(target) for c in chunks], type=target).combine_chunks() \
        if any(len(c) for c in chunks) else pa.array([], type=target)
    if len(ids) == 0:
        raise ConfigError(f"--input {config.input} holds no rows")
    nulls = ids.null_count
    if nulls:
        raise ConfigError(f"--input: {nulls} row(s) have a null id in column {config.id_column!r}; "
                          "every row needs a unique id")
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))
        shown = ", ".join(repr(v) for v in dup.field("values")[:_MAX_SHOWN].to_pylist())
        raise ConfigError(f"--input: {len(dup)} id(s) in column {config.id_column!r} occur more than once "
                          f"(e.g. {shown}); ids must be unique")


def check_model(flag: str, source: str | None, config: GenerateConfig):
    """Resolve the checkpoint (copying URLs to the local cache), read its config, weight index
    and tokenizer. Returns (ModelConfig, tokenizer)."""
    from workers.models import load_config
    from workers.models.source import resolve_model_path
    from workers.text.tokenizer import load_tokenizer

    from .checkpoint_check import check_checkpoint

    if not source:
        raise ConfigError(f"{flag} is required")
    try:
        path = resolve_model_path(source, config.storage_options)
        cfg = load_config(path)
        # Safetensors only, every file inside the directory, config.json against the headers.
        check_checkpoint(path, cfg)
        tokenizer = load_tokenizer(path)
        if len(tokenizer.tokenizer) > cfg.vocab_size:
            raise ModelLoadError(f"{path}: the tokenizer has {len(tokenizer.tokenizer)} tokens, more than "
                                 f"config.json vocab_size {cfg.vocab_size}: it does not belong to these weights")
        return cfg, tokenizer
    except ModelLoadError as err:
        raise ConfigError(f"{flag}: {err}") from None
    except Exception as err:
        raise ConfigError(f"{flag} {source} cannot be loaded ({type(err).__name__}: {err})") from None


def check_block_length(target_cfg, config: GenerateConfig) -> list[str]:
    if target_cfg.is_diffusion and config.block_length is not None and config.block_length != target_cfg.block_size:
        return [f"--block-length {config.block_length} differs from the block size the target was trained "
                f"with ({target_cfg.block_size}); generations may be worse"]
    return []


def check_same_vocab(target_tok, draft_tok, config: GenerateConfig, target_cfg=None, draft_cfg=None) -> None:
    # SimSD compares draft and target token ids position by position: the vocabularies must match.
    if target_cfg is not None and draft_cfg is not None and target_cfg.vocab_size != draft_cfg.vocab_size:
        raise ConfigError(f"--draft {config.draft} and --target {config.target} have different tokenizers "
                          f"(config.json vocab_size {draft_cfg.vocab_size} vs {target_cfg.vocab_size}); "
                          "a draft must share the target's vocabulary")
    t_size, t_vocab = target_tok.vocab_fingerprint()
    d_size, d_vocab = draft_tok.vocab_fingerprint()
    if t_size != d_size or t_vocab != d_vocab:
        raise ConfigError(f"--draft {config.draft} and --target {config.target} have different tokenizers "
                          f"({d_size} vs {t_size} tokens); a draft must share the target's vocabulary")


def check_output(config: GenerateConfig) -> None:
    from .output_check import check_writable

    check_writable(config)  # a read-only path is exit 2 here, not a failure after Ray started
    if config.overwrite:
        return
    fs, path = open_fs(config.output, config.storage_options)
    job = read_job_file(fs, path)
    if job is None:
        if retry(fs.exists, path) and list_parquet(fs, path):
            raise ConfigError(f"--output {config.output} holds Parquet files not written by simsd; "
                              "pick another directory or pass --overwrite")
        return
    check_resumable(config, job, fs, path)  # old and new value of each change, and the flag to pass

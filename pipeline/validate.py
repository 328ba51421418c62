"""Fail fast, before any actor or GPU is reserved: inputs, columns, models, tokenizers, output.

Every check raises ConfigError with a message that names the problem; jobs/ turns that into
`simsd generate: error: ...` and a nonzero exit.
"""
from __future__ import annotations

import pyarrow.parquet as pq

from workers.models.config import ModelLoadError
from .config import ConfigError, GenerateConfig
from .resume import read_job_file
from .storage import list_parquet, open_fs


def validate(config: GenerateConfig) -> None:
    check_input(config)
    tokenizer = check_model("--target", config.target, config)
    if config.draft is not None:
        draft_tokenizer = check_model("--draft", config.draft, config)
        check_same_vocab(tokenizer, draft_tokenizer, config)
    check_output(config)


def check_input(config: GenerateConfig) -> None:
    if not config.input:
        raise ConfigError("--input is required")
    try:
        fs, path = open_fs(config.input, config.storage_options)
        if not fs.exists(path):
            raise ConfigError(f"--input {config.input} does not exist")
        files = list_parquet(fs, path)
    except ConfigError:
        raise
    except Exception as err:  # permissions, bad endpoint, unknown protocol
        raise ConfigError(f"--input {config.input} is not readable ({type(err).__name__}: {err})") from None
    if not files:
        raise ConfigError(f"--input {config.input} holds no .parquet files")
    check_columns(_schema_names(fs, files[0], config.input), config)


def _schema_names(fs, file: str, url: str) -> list[str]:
    # Only the footer is read: the schema, never the data.
    try:
        with fs.open(file, "rb") as f:
            return list(pq.read_schema(f).names)
    except Exception as err:
        raise ConfigError(f"--input {url}: {file} is not a readable Parquet file ({err})") from None


def check_columns(names: list[str], config: GenerateConfig) -> None:
    if config.id_column not in names:
        raise ConfigError(f"--input has no id column {config.id_column!r} (columns: {', '.join(names)}); "
                          f"pass --id-column")
    text_column = config.messages_column or config.prompt_column
    if text_column not in names:
        flag = "--messages-column" if config.messages_column else "--prompt-column"
        raise ConfigError(f"--input has no column {text_column!r} (columns: {', '.join(names)}); pass {flag}")


def check_model(flag: str, source: str | None, config: GenerateConfig):
    """Resolve the checkpoint (copying URLs to the local cache), read its config and tokenizer."""
    from workers.models import load_config
    from workers.models.source import resolve_model_path
    from workers.tokenizer import load_tokenizer

    if not source:
        raise ConfigError(f"{flag} is required")
    try:
        path = resolve_model_path(source, config.storage_options)
        load_config(path)
        return load_tokenizer(path)
    except ModelLoadError as err:
        raise ConfigError(f"{flag}: {err}") from None
    except Exception as err:
        raise ConfigError(f"{flag} {source} cannot be loaded ({type(err).__name__}: {err})") from None


def check_same_vocab(target_tok, draft_tok, config: GenerateConfig) -> None:
    # SimSD compares draft and target token ids position by position: the vocabularies must match.
    t_size, t_vocab = target_tok.vocab_fingerprint()
    d_size, d_vocab = draft_tok.vocab_fingerprint()
    if t_size != d_size or t_vocab != d_vocab:
        raise ConfigError(f"--draft {config.draft} and --target {config.target} have different tokenizers "
                          f"({d_size} vs {t_size} tokens); a draft must share the target's vocabulary")


def check_output(config: GenerateConfig) -> None:
    if config.overwrite:
        return
    fs, path = open_fs(config.output, config.storage_options)
    job = read_job_file(fs, path)
    if job is None:
        if fs.exists(path) and list_parquet(fs, path):
            raise ConfigError(f"--output {config.output} holds Parquet files not written by simsd; "
                              "pick another directory or pass --overwrite")
        return
    if job.get("fingerprint") != config.fingerprint():
        raise ConfigError(f"--output {config.output} holds results of a different config "
                          f"({_diff(job.get('identity', {}), config.identity())}); "
                          "rerun with the same settings to resume, or pass --overwrite")


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "changed: " + ", ".join(keys) if keys else "fingerprint mismatch"

"""Where a checkpoint comes from: a local directory, an fsspec URL, or a hub id.

Object-store checkpoints (``s3://bucket/prefix``, ``gs://...``, any fsspec URL) are copied once
to a local cache directory keyed by the URL; later loads reuse the copy. A partially copied
directory is never used: the copy lands in a temporary directory that is renamed when complete.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from .config import ModelLoadError

# Only these files are fetched: configs, tokenizer files and safetensors weights.
_ALLOWED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".md")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SIMSD_CACHE", Path.home() / ".cache" / "simsd" / "models"))


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_model_path(source: str, storage_options: dict | None = None,
                       cache_dir: Path | None = None) -> Path:
    """Return a local directory holding the checkpoint named by ``source``."""
    if source.startswith("file://"):
        source = source[len("file://"):]
    if is_url(source):
        return _copy_from_url(source, storage_options or {}, cache_dir or default_cache_dir())
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(f"{source} is not a model directory: no config.json")
        return path
    if _looks_like_hub_id(source):
        return _from_hub(source)
    raise ModelLoadError(f"model path {source} does not exist")


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, allow_patterns=[f"*{s}" for s in _ALLOWED_SUFFIXES]))
    except Exception as err:  # offline, unknown repo, no permission
        raise ModelLoadError(
            f"{repo_id!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(err).__name__}: {str(err)[:200]}). Pass a local path or an s3:// URL.") from None


def _copy_from_url(url: str, storage_options: dict, cache_dir: Path) -> Path:
    import fsspec

    target = cache_dir / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    if (target / "config.json").is_file():
        return target
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/config.json"):
        raise ModelLoadError(f"{url} is not a model directory: no config.json")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".partial-"))
    try:
        for remote in fs.find(root):
            rel = PurePosixPath(remote).relative_to(PurePosixPath(root))
            if rel.suffix not in _ALLOWED_SUFFIXES or ".." in rel.parts:
                continue
            local = tmp / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

"""The built-in demo: `simsd generate` with no --input/--target runs end to end on any machine.

With the shipped reference family (models/reference/) it decodes held-out arithmetic word
problems - the family's domain - with SimSD and the reference draft, so the summary shows real
acceptance figures. Without it, tiny random models are built on the fly (their text is gibberish;
they show the pipeline works, not what the models can do).
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WORKDIR_PREFIX = "simsd-demo-"  # the temp dir holding the demo's prompts (and tiny models): removed after
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "models" / "reference"
DEMO_PROMPTS = [
    "Write a haiku about the sea.",
    "What is 17 times 23?",
    "Explain speculative decoding in one sentence.",
    "List three prime numbers greater than 50.",
    "Translate 'good morning' into French.",
    "Name a sorting algorithm and its complexity.",
    "Why is the sky blue?",
    "Give a synonym for 'fast'.",
]


def prepare(config):
    """Return ``config`` with demo prompts, models and small budgets filled in."""
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    reference = (REFERENCE_DIR / "target" / "config.json").is_file()
    decoder = "simsd" if reference else config.decoder
    target, draft = _models(workdir, wants_draft=decoder == "simsd" or config.draft is not None)
    texts = _arithmetic_prompts() if reference else DEMO_PROMPTS
    prompts = workdir / "prompts.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "prompt": texts}), prompts)
    print(f"simsd demo: {len(texts)} built-in prompts in {prompts}; output to {config.output} "
          "(replaced on each demo run)")
    # The demo's models live in a fresh temp dir each time, so resuming could never match: overwrite.
    return dataclasses.replace(config, input=str(prompts), target=str(target), decoder=decoder,
                               draft=config.draft or (str(draft) if draft else None),
                               max_new_tokens=min(config.max_new_tokens, 160 if reference else 32),
                               overwrite=True)


@contextlib.contextmanager
def workdir_removed(config):
    """Run the demo on ``config`` (from ``prepare``), then delete its temp dir (prompts, tiny
    models), also when the run fails; the output directory stays."""
    try:
        yield config
    finally:
        workdir = Path(config.input).parent
        if workdir.name.startswith(WORKDIR_PREFIX) and workdir.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(workdir, ignore_errors=True)


def _arithmetic_prompts(n: int = 8) -> list[str]:
    from pipeline.reference_data import heldout_problems

    return [question for question, _ in heldout_problems(n)]


def show_samples(config, n: int = 3) -> None:
    """Print a few prompts with their generations (the demo's proof that the text is real)."""
    from .resume import data_files, read_columns
    from .storage import open_fs

    fs, out = open_fs(config.output, config.storage_options)
    table = read_columns(fs, data_files(fs, out), ["id", "generated_text"])
    inputs = {row["id"]: row["prompt"] for row in pq.read_table(config.input).to_pylist()}
    for row in sorted(table.to_pylist(), key=lambda r: r["id"])[:n]:
        print(f"\n--- prompt {row['id']}: {inputs[row['id']]}\n{row['generated_text']}")


def _models(workdir: Path, wants_draft: bool) -> tuple[Path, Path | None]:
    ref_target, ref_draft = REFERENCE_DIR / "target", REFERENCE_DIR / "draft"
    if (ref_target / "config.json").is_file():
        print(f"simsd demo: using the reference target in {ref_target}")
        draft = ref_draft if wants_draft and (ref_draft / "config.json").is_file() else None
        if wants_draft and draft is None:
            draft = _tiny(workdir / "draft", "qwen3", seed=1)
        return ref_target, draft
    print("simsd demo: no reference models found in models/reference/; building TINY RANDOM models "
          f"in {workdir} (the generated text is meaningless, the pipeline run is real)")
    target = _tiny(workdir / "target", "sdar", seed=0)
    return target, _tiny(workdir / "draft", "qwen3", seed=1) if wants_draft else None


def _tiny(path: Path, model_type: str, seed: int) -> Path:
    from workers.models.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(path, model_type=model_type, seed=seed)
    return path

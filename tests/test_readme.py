"""The README's reference tables cover every flag of `simsd generate` and every output column."""
import re
from dataclasses import fields
from pathlib import Path

from pipeline.config import GenerateConfig
from workers.actor import OUTPUT_SCHEMA_TAIL

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_cli_table_lists_every_flag():
    table = _section("## CLI reference")
    listed = set(re.findall(r"`(--[a-z0-9-]+)", table))
    missing = [f"--{f.name.replace('_', '-')}" for f in fields(GenerateConfig)
               if f"--{f.name.replace('_', '-')}" not in listed]
    assert not missing, missing


def test_output_table_lists_every_column_and_n_rows_per_input():
    output = _section("## Output")
    columns = set(re.findall(r"^\| `([a-z_]+)`", output, re.M)) | \
        {c for row in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)+)", output, re.M) for c in re.findall(r"`([a-z_]+)`", row)}
    missing = [name for name, _ in OUTPUT_SCHEMA_TAIL if name not in columns]
    assert not missing, missing
    assert "one row per input row" not in output and "n rows per input row" in output

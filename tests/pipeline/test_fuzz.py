"""Property tests (hypothesis): the config parser and the input path never fail with anything but
a ConfigError, and any input Parquet that validation accepts comes out with every id exactly once.

Runs without Ray: validate() and the actor UDF (with the fake engine) are what see the data;
batches are cut the way Ray Data would hand them over. Examples are few so this stays fast.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, GenerateConfig, parse_args
from pipeline.validate import validate
from tests.pipeline.fakes import FakeEngine, make_model_dir
from workers.actor import OUTPUT_SCHEMA_TAIL, GenerateUDF

# SIMSD_FUZZ_EXAMPLES=500 for a longer search; CI keeps the default.
FUZZ = settings(max_examples=int(os.environ.get("SIMSD_FUZZ_EXAMPLES", "30")), deadline=None, suppress_health_check=list(HealthCheck))
FIELDS = {f.name: f for f in fields(GenerateConfig)}

junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=12), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _good_value(name):
    f = FIELDS[name]
    if f.metadata["choices"]:
        return st.sampled_from(f.metadata["choices"])
    kind = f.metadata["type"]
    if kind is int:
        return st.integers(-3, 600)
    if kind is float:
        return st.floats(-1, 3, allow_nan=False)
    if isinstance(f.default, bool):
        return st.booleans()
    if name == "storage_options":
        return st.dictionaries(st.sampled_from(["key", "secret", "endpoint_url"]), st.text(max_size=8), max_size=2)
    return st.text(max_size=10)


def _flag_tokens(name, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(FIELDS[name].default, bool):
        return [flag] if value else []
    if name == "storage_options":
        import json
        return [flag, value if isinstance(value, str) else json.dumps(value)]
    return [flag, str(value)]


@st.composite
def cli_and_yaml(draw):
    names = sorted(FIELDS)
    argv = []
    for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
        value = draw(st.one_of(_good_value(name), st.text(max_size=8)))
        argv += _flag_tokens(name, value)
    if draw(st.booleans()):
        argv += draw(st.sampled_from([["--nonsense"], ["--max-new-tokens"], ["positional"], ["--storage-options", "[1]"]]))
    yaml_doc = None
    if draw(st.booleans()):
        keys = st.one_of(st.sampled_from(names + [n.replace("_", "-") for n in names]), st.text(max_size=6))
        yaml_doc = draw(st.one_of(
            st.dictionaries(keys, st.one_of(*[_good_value(n) for n in ("max_new_tokens", "temperature", "decoder")], junk),
                            max_size=5),
            junk, st.text(max_size=30)))
    return argv, yaml_doc


@FUZZ
@given(cli_and_yaml())
def test_config_parser_gives_a_config_or_a_config_error(case):
    argv, yaml_doc = case
    with tempfile.TemporaryDirectory() as tmp:
        if yaml_doc is not None:
            path = Path(tmp) / "job.yaml"
            path.write_text(yaml_doc if isinstance(yaml_doc, str) else yaml.safe_dump(yaml_doc))
            argv = ["--config", str(path), *argv]
        try:
            config = parse_args(argv)
        except ConfigError as err:
            assert str(err)
            return
    # What came back is well typed and self-consistent.
    for name, f in FIELDS.items():
        value = getattr(config, name)
        if f.metadata["type"] is float and value is not None:
            assert isinstance(value, float) and math.isfinite(value)
        if f.metadata["type"] is int and value is not None:
            assert isinstance(value, int) and not isinstance(value, bool)
        if f.metadata["choices"]:
            assert value in f.metadata["choices"]
    assert config.decode.max_new_tokens >= 1 and config.decode.temperature >= 0
    assert isinstance(config.storage_options, dict)
    assert len(config.fingerprint()) == 16


# --- input Parquet shapes ------------------------------------------------------------------------

_MODEL = None


def _model_dir() -> Path:
    global _MODEL
    if _MODEL is None:
        _MODEL = make_model_dir(Path(tempfile.mkdtemp(prefix="fuzz-model-")) / "m")
    return _MODEL


prompts = st.one_of(st.none(), st.just(""), st.text(max_size=40), st.text(min_size=500, max_size=3000),
                    st.sampled_from(["hello world", "write a haiku", "日本語 ✓ émoji 🙂", "\x00\n\t"]))


@st.composite
def parquet_inputs(draw):
    """Files of rows with unique int ids; some shapes that validation must refuse, marked so."""
    n_files = draw(st.integers(1, 4))
    total = draw(st.integers(0, 30))
    ids = list(range(total))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=n_files - 1, max_size=n_files - 1)))
    parts = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, total])]
    defect = draw(st.sampled_from([None, None, None, "duplicate", "null_id", "int_prompt", "missing_prompt",
                                   "string_ids_in_one_file"]))
    files = []
    for k, part in enumerate(parts):
        cols = {"id": pa.array(part, pa.int64()),
                "prompt": pa.array([draw(prompts) for _ in part], pa.string())}
        if draw(st.booleans()):
            cols["max_new_tokens"] = pa.array([draw(st.one_of(st.none(), st.integers(-5, 200))) for _ in part],
                                              pa.int64())
        if draw(st.booleans()):
            cols["temperature"] = pa.array([draw(st.one_of(st.none(), st.floats(-2, 500))) for _ in part],
                                           pa.float64())
        files.append({"table": pa.table(cols), "row_group_size": draw(st.integers(1, 8)),
                      "empty_group": draw(st.booleans())})
    if defect == "duplicate" and total:
        t = next(f["table"] for f in files if f["table"].num_rows)
        files.append({"table": t.slice(0, 1), "row_group_size": 4, "empty_group": False})
    elif defect == "null_id" and total:
        t = files[0]["table"]
        files[0]["table"] = t.set_column(0, "id", pa.array([None] * t.num_rows, pa.int64()))
        defect = defect if t.num_rows else None
    elif defect == "int_prompt":
        t = files[0]["table"]
        files[0]["table"] = t.set_column(1, "prompt", pa.array(range(t.num_rows), pa.int64()))
    elif defect == "missing_prompt":
        files[-1]["table"] = files[-1]["table"].drop_columns(["prompt"])
    elif defect == "string_ids_in_one_file" and n_files > 1 and total:
        t = files[0]["table"]
        files[0]["table"] = t.set_column(0, "id", pa.array([f"s{i}" for i in t.column("id").to_pylist()]))
    elif defect in ("duplicate", "null_id", "string_ids_in_one_file"):
        defect = None
    if total == 0 and defect is None:
        defect = "no_rows"
    return files, defect


def _write(files, root: Path) -> None:
    root.mkdir()
    for k, spec in enumerate(files):
        table = spec["table"]
        with pq.ParquetWriter(root / f"part-{k}.parquet", table.schema) as writer:
            if spec["empty_group"]:
                writer.write_table(table.slice(0, 0))
            writer.write_table(table, row_group_size=spec["row_group_size"])


@FUZZ
@given(parquet_inputs(), st.integers(1, 7))
def test_any_input_shape_gives_every_id_once_or_a_config_error(case, batch_rows):
    files, defect = case
    with tempfile.TemporaryDirectory() as tmp:
        _write(files, Path(tmp) / "in")
        config = GenerateConfig(input=str(Path(tmp) / "in"), output=str(Path(tmp) / "out"),
                                target=str(_model_dir()), max_new_tokens=4, device="cpu")
        try:
            validate(config)
        except ConfigError as err:
            assert defect is not None, f"refused a valid input: {err}"
            return
        assert defect is None, f"accepted an input with defect {defect}"
        table = pa.concat_tables([pq.read_table(Path(tmp) / "in" / f"part-{k}.parquet") for k in range(len(files))],
                                 promote_options="permissive")
    udf = GenerateUDF(config, FakeEngine)
    outs = [udf(table.slice(i, batch_rows)) for i in range(0, table.num_rows, batch_rows)]
    out = pa.concat_tables(outs)
    assert out.column_names == ["id"] + [n for n, _ in OUTPUT_SCHEMA_TAIL]
    assert out.column("id").to_pylist() == table.column("id").to_pylist()  # each once, in order
    for row in out.to_pylist():
        assert row["finish_reason"] in ("length", "stop", "error")
        assert (row["error"] is None) == (row["finish_reason"] != "error")

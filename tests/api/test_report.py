"""The run report: `simsd report OUTPUT` writes one self-contained page, checked in headless Chromium."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline import report

PLOTS = ("throughput", "acceptance", "length", "time", "errors")


def write_output(out: Path, n: int = 40, errors_every: int = 10) -> Path:
    """An output directory as `simsd generate` leaves it: data/*.parquet and summary.parquet."""
    (out / "data").mkdir(parents=True)
    start = 1_700_000_000.0
    err = [(i + 1) % errors_every == 0 for i in range(n)]
    table = pa.table({
        "id": list(range(n)),
        "generated_text": [None if e else "text" for e in err],
        "finish_reason": ["error" if e else ("stop" if i % 3 else "length") for i, e in enumerate(err)],
        "error": [f"prompt has {100 + i} tokens, more than the model's limit of 96" if e else None
                  for i, e in enumerate(err)],
        "num_generated_tokens": [0 if e else 1 + i % 7 for i, e in enumerate(err)],
        "num_rounds": [0 if e else 3 for e in err],
        "num_drafted_tokens": [0 if e else 6 for e in err],
        "num_accepted_tokens": [0 if e else i % 4 for i, e in enumerate(err)],
        "time_taken_s": [0.0 if e else 0.05 * i for i, e in enumerate(err)],
        "actor_id": [f"host:{100 + i % 2}" for i in range(n)],
        "finished_at": [start + 2.0 * (i // 8) for i in range(n)],
    })
    pq.write_table(table, out / "data" / "part-0.parquet")
    run = {"run_id": "20261207-a", "started_at": start - 5, "rows_this_run": n, "tokens_per_s": 12.5,
           "tokens_per_s_e2e": 9.0, "startup_s": 5.0, "decode_s": 8.0, "wall_time_s": 14.0, "num_workers": 2,
           "device": "cuda"}
    summary = {"rows": n, "errors": sum(err), "tokens_per_s": 12.5, "acceptance_rate": 0.25, "wall_time_s": 14.0,
               "device": "cuda", "num_workers": 2, "tokens_per_s_per_worker": 6.25, "undrafted_round_fraction_this_run": 0.0,
               "decode_config": '{"acceptance": "auto", "adaptive": "auto", "attention": "auto", "batch_size": 32, '
                                '"block_length": null, "commit_folding": "auto", "decoder": "simsd", "denoising_steps": null}',
               "target": "/home/someone/.cache/simsd/models/sdar-8b-chat-b32-with-a-long-directory-name/snapshots/main",
               "versions": '{"ray": "2.60.0", "simsd-pipeline": "0.1.0", "torch": "2.13.0", "transformers": "5.1.0"}',
               "runs": [run, {**run, "run_id": "20261207-b", "rows_this_run": 0}]}
    pq.write_table(pa.Table.from_pylist([summary]), out / "summary.parquet")
    return out


def chromium() -> str:
    """The headless browser; CI installs it (.ci/run), so only a local run without it skips."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


def _browser(binary: str, *args: str) -> str:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_every_plot_in_headless_chromium(tmp_path):
    binary = chromium()
    out = write_output(tmp_path / "out")
    assert main(["report", str(out)]) == 0
    page = out / report.REPORT_FILE
    text = page.read_text()
    # Self-contained: every image inline, nothing fetched from anywhere.
    assert text.count('src="data:image/png;base64,') == len(PLOTS)
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)
    for key in PLOTS:
        assert f'id="plot-{key}"' in text
    assert "<th>tokens_per_s</th><td>12.5</td>" in text  # the summary figures
    # Headline figures first, then the run history, the plots, the full summary table.
    assert text.index('class="headline"') < text.index('<table class="runs"') < text.index('id="plot-') \
        < text.index('<table class="summary"')
    for figure in ("12.5", "25.0%", "14.0 s", "cuda x 2 workers", "error rows"):
        assert figure in text.split('<table class="runs"')[0], figure

    dom = _browser(binary, "--window-size=1280,2600", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-plots-total="{len(PLOTS)}"' in body and f'data-plots-loaded="{len(PLOTS)}"' in body, body
    assert 'data-broken-words="0"' in body, body  # nothing wraps mid-word at 1280 px
    assert int(re.search(r'data-scroll-width="(\d+)"', body).group(1)) <= 1280, body

    shot = tmp_path / "shot.png"
    _browser(binary, "--window-size=1280,3200", f"--screenshot={shot}", page.as_uri())
    _assert_drawn(shot)


def _assert_drawn(png: Path) -> None:
    """The screenshot shows plots: many colours, and the plot blue and error red among them."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[:: max(1, len(pixels) // 200_000)]}
    assert len(colours) > 50, f"{len(colours)} colours: the page looks blank"
    near = lambda rgb: (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum()  # noqa: E731
    assert near((0x2C, 0x7F, 0xB8)) > 5000, "no histogram bars in the screenshot"
    assert near((0xC0, 0x39, 0x2B)) > 1000, "no error bars in the screenshot"


def test_report_of_a_run_without_summary_or_errors(tmp_path):
    out = write_output(tmp_path / "out", n=12, errors_every=10 ** 6)
    (out / "summary.parquet").unlink()
    path = report.write(fsspec.filesystem("file"), str(out))
    text = Path(path).read_text()
    assert "No summary.parquet" in text and "12 row(s)" in text
    assert text.count("data:image/png;base64,") == len(PLOTS) - 1 and 'id="plot-errors"' not in text  # no empty plot


def test_report_command_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no generated rows" in capsys.readouterr().err


def test_a_failing_report_warns_and_returns_none(tmp_path, capsys, monkeypatch):
    out = write_output(tmp_path / "out")
    monkeypatch.setattr(report, "render", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no fonts")))
    started = time.time()
    assert report.write_quietly(fsspec.filesystem("file"), str(out)) is None
    assert time.time() - started < 30
    err = capsys.readouterr().err
    assert "could not write report.html (RuntimeError: no fonts)" in err and "simsd report" in err


def test_error_reasons_group_messages_that_differ_only_in_numbers():
    assert report.error_reason("prompt has 120 tokens, more than the limit of 96") == \
        "prompt has N tokens, more than the limit of N"
    assert report.error_reason("x" * 200).endswith("...") and len(report.error_reason("x" * 200)) == 70
    assert report.error_reason(None) == "unknown"
    assert report.error_reason("first line 3\ntraceback 4") == "first line N"


def test_one_batch_throughput_is_the_summary_figure():
    """A job that finished in one batch: one segment at tokens / decoding time (what the summary
    reports as tokens_per_s), not an empty plot or tokens per 1 s bin."""
    from pipeline import summary

    n, end = 30, 1_700_000_100.0
    rows = pa.table({"finish_reason": ["stop"] * n, "error": [None] * n, "num_generated_tokens": [50] * n,
                     "num_rounds": [10] * n, "num_drafted_tokens": [0] * n, "num_accepted_tokens": [0] * n,
                     "time_taken_s": [9.0 - 0.1 * i for i in range(n)], "actor_id": ["host:1"] * n,
                     "finished_at": [end] * n})
    data = report._columns(rows)
    [(start, stop, tokens)] = report.worker_batches(data)["host:1"]
    timing = summary.run_timing(rows, wall_time_s=20.0, started_at=end - 20.0)
    assert tokens / (stop - start) == pytest.approx(n * 50 / timing["decode_s"])  # 166.7 tokens/s
    assert report.throughput_plot(data) is not None


def test_plots_without_data_are_left_out():
    empty = report._columns(None)
    assert [report.throughput_plot(empty), report.acceptance_plot(empty), report.length_plot(empty),
            report.time_plot(empty), report.errors_plot(empty)] == [None] * 5

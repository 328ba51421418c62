"""The run report: one self-contained HTML page (PNG plots inlined) from an output directory.

Reads ``summary.parquet`` and the per-row columns of ``<output>/data``; writes
``<output>/report.html``. `simsd report OUTPUT` writes it on demand; ``pipeline.driver.run``
writes it at the end of every job (a failure there is a warning, never a failed job).
"""
from __future__ import annotations

import base64
import html
import io
import logging
import re
import sys
from dataclasses import dataclass

import pyarrow as pa

from . import resume
from .storage import join, write_atomic

REPORT_FILE = "report.html"
ROW_COLUMNS = ["finish_reason", "error", "num_generated_tokens", "num_rounds", "num_drafted_tokens",
               "num_accepted_tokens", "time_taken_s", "actor_id", "finished_at"]
_BINS = 30
_MAX_REASONS = 12
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plot:
    key: str        # the section id (plot-<key>)
    title: str
    caption: str
    png: bytes


def write(fs, out: str) -> str:
    """Build the report of output directory ``out`` on ``fs``; return the report's path."""
    rows = resume.read_columns(fs, resume.data_files(fs, out), ROW_COLUMNS)
    stats = read_summary(fs, out)
    page = render(rows, stats, title=out)
    path = join(out, REPORT_FILE)
    write_atomic(fs, path, page.encode("utf-8"))  # never a half-written page
    return path


def write_quietly(fs, out: str) -> str | None:
    """``write``, but a failure is a warning on stderr: the job's results are already safe."""
    try:
        return write(fs, out)
    except Exception as err:  # noqa: BLE001 - the report is a convenience, never a job failure
        log.warning("could not write the run report: %s: %s", type(err).__name__, err)
        print(f"simsd: warning: could not write {REPORT_FILE} ({type(err).__name__}: {err}); "
              f"run `simsd report {out}` to retry", file=sys.stderr)
        return None


def is_complete(fs, out: str) -> bool:
    """Whether ``report.html`` exists and ends its page (not cut short)."""
    path = join(out, REPORT_FILE)
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as f:
            f.seek(max(size - 64, 0))
            return b"</html>" in f.read()
    except (FileNotFoundError, OSError):
        return False


def read_summary(fs, out: str) -> dict | None:
    """The summary, or None when it is missing or unreadable (the page then has plots only)."""
    from .summary import read

    return read(fs, out)


def render(rows: pa.Table | None, stats: dict | None, title: str = "") -> str:
    """The HTML page: the summary figures, then every plot as an inline PNG."""
    data = _columns(rows)
    plots = [throughput_plot(data), acceptance_plot(data), length_plot(data), time_plot(data), errors_plot(data)]
    sections = "\n".join(_section(p) for p in plots)
    return _PAGE.format(title=html.escape(title), rows=len(data["finish_reason"]),
                        summary=_summary_table(stats), sections=sections)


def _columns(rows: pa.Table | None) -> dict[str, list]:
    if rows is None:
        return {name: [] for name in ROW_COLUMNS}
    return {name: rows.column(name).to_pylist() if name in rows.column_names else [None] * rows.num_rows
            for name in ROW_COLUMNS}


def _ok(data: dict) -> list[int]:
    return [i for i, reason in enumerate(data["finish_reason"]) if reason != "error"]


def throughput_plot(data: dict) -> Plot:
    """Generated tokens per second per worker, in time bins from the first finished batch."""
    import numpy as np

    fig, ax = _figure()
    done = [(t, a, n or 0) for t, a, n in zip(data["finished_at"], data["actor_id"], data["num_generated_tokens"])
            if t is not None]
    if done:
        start = min(t for t, _, _ in done)
        span = max(max(t for t, _, _ in done) - start, 1.0)
        bins = max(1, min(_BINS, len({t for t, _, _ in done}) - 1))  # no finer than the batch ends
        width = span / bins
        edges = start + width * np.arange(bins + 1)
        for actor in sorted({a for _, a, _ in done}, key=str):
            times = [t for t, a, _ in done if a == actor]
            tokens = [n for _, a, n in done if a == actor]
            counts, _ = np.histogram(times, bins=edges, weights=tokens)
            ax.step(edges[:-1] - start, counts / width, where="post", label=str(actor))
        ax.legend(fontsize="small", title="worker")
    else:
        _empty(ax)
    ax.set_xlabel("seconds since the first finished batch")
    ax.set_ylabel("generated tokens / s")
    return Plot("throughput", "Throughput over time per worker",
                "Tokens of the rows each worker finished, per time bin. Rows finish a batch at a time, "
                "so the line steps at batch boundaries.", _png(fig))


def acceptance_plot(data: dict) -> Plot:
    """Per row: accepted draft tokens per speculative round (SimSD), or tokens per denoising
    step when nothing was drafted (vanilla)."""
    fig, ax = _figure()
    rows = _ok(data)
    drafted = [i for i in rows if (data["num_drafted_tokens"][i] or 0) > 0 and data["num_rounds"][i]]
    if drafted:
        values = [data["num_accepted_tokens"][i] / data["num_rounds"][i] for i in drafted]
        label = "accepted draft tokens per round (row mean)"
    else:
        stepped = [i for i in rows if data["num_rounds"][i]]
        values = [(data["num_generated_tokens"][i] or 0) / data["num_rounds"][i] for i in stepped]
        label = "generated tokens per denoising step (row mean; nothing was drafted)"
    _histogram(ax, values, label)
    return Plot("acceptance", "Accepted tokens per round",
                "Distribution over rows of each row's mean tokens per round.", _png(fig))


def length_plot(data: dict) -> Plot:
    fig, ax = _figure()
    _histogram(ax, [data["num_generated_tokens"][i] or 0 for i in _ok(data)], "generated tokens per row")
    return Plot("length", "Generated length", "Rows that did not end in an error.", _png(fig))


def time_plot(data: dict) -> Plot:
    fig, ax = _figure()
    values = [data["time_taken_s"][i] for i in _ok(data) if data["time_taken_s"][i] is not None]
    _histogram(ax, values, "seconds per row (admission to finish, inside the engine)")
    return Plot("time", "Time per row", "Rows that did not end in an error.", _png(fig))


def errors_plot(data: dict) -> Plot:
    """Error rows grouped by reason (numbers in messages folded to N so like errors group)."""
    fig, ax = _figure()
    reasons: dict[str, int] = {}
    for reason, error in zip(data["finish_reason"], data["error"]):
        if reason == "error":
            key = error_reason(error)
            reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_REASONS]
        labels, counts = [k for k, _ in top][::-1], [v for _, v in top][::-1]
        ax.barh(range(len(top)), counts, color="#c0392b")
        ax.set_yticks(range(len(top)), labels, fontsize="small")
        ax.set_xlabel("error rows")
    else:
        _empty(ax, "no error rows")
    caption = (f"{sum(reasons.values())} error row(s), {len(reasons)} reason(s)"
               + (f"; the {_MAX_REASONS} most common shown" if len(reasons) > _MAX_REASONS else ""))
    return Plot("errors", "Error rows by reason", caption, _png(fig))


def error_reason(message: str | None) -> str:
    """An error message with its numbers folded to N, cut to one short line."""
    text = re.sub(r"\d+(\.\d+)?", "N", (message or "unknown").splitlines()[0] if message else "unknown")
    return text if len(text) <= 70 else text[:67] + "..."


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 3.6), dpi=100, layout="constrained")


def _histogram(ax, values: list, label: str) -> None:
    if values:
        ax.hist(values, bins=min(_BINS, max(1, len(set(values)))), color="#2c7fb8")
        ax.set_ylabel("rows")
    else:
        _empty(ax)
    ax.set_xlabel(label)


def _empty(ax, text: str = "no rows") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="large")
    ax.set_xticks([])
    ax.set_yticks([])


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _section(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<section class="plot" id="plot-{plot.key}"><h2>{html.escape(plot.title)}</h2>'
            f'<img alt="{html.escape(plot.title)}" src="data:image/png;base64,{data}">'
            f"<p>{html.escape(plot.caption)}</p></section>")


def _summary_table(stats: dict | None) -> str:
    if not stats:
        return "<p>No summary.parquet (the run did not finish): plots only.</p>"
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                    for k, v in stats.items())
    return f'<table class="summary">{cells}</table>'


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simsd run report: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table.summary {{ border-collapse: collapse; font-size: 0.9em; }}
table.summary th, table.summary td {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left;
  vertical-align: top; word-break: break-all; }}
section.plot img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head>
<body>
<h1>simsd run report</h1>
<p>Output <code>{title}</code>: {rows} row(s).</p>
{summary}
{sections}
<script>
// For headless checks: how many plots decoded (all images self-contained, nothing is fetched).
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.plotsTotal = images.length;
  document.body.dataset.plotsLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script>
</body></html>
"""

"""The report page's text parts: headline figures, per-run history, the full summary table, and
the HTML shell. Plots are drawn in pipeline/report.py.

Layout rules (checked in headless Chromium by tests/api/test_report.py): the headline comes
first; keys and values wrap only between words (long paths and JSON break after their
separators, never inside a word); the page fits 1280 px without horizontal scrolling.
"""
from __future__ import annotations

import html
import json
import time

# The figures a reader looks for first: (summary key, label, how to show it).
HEADLINE = (("rows", "rows", "{:,}"), ("errors", "error rows", "{:,}"),
            ("tokens_per_s", "tokens/s (decoding, latest run)", "{:,.1f}"),
            ("acceptance_rate", "acceptance", "{:.1%}"), ("wall_time_s", "wall time (latest run)", "{:,.1f} s"))


def headline(stats: dict | None, rows: int) -> str:
    stats = stats or {"rows": rows}
    cells = []
    for key, label, form in HEADLINE:
        value = stats.get(key)
        cells.append(_card(label, "-" if value is None else form.format(value)))
    device = stats.get("device")
    if device is not None:
        workers = stats.get("num_workers")
        cells.append(_card("GPU" if device == "cuda" else "device",
                           f"{device} x {workers} worker{'s' if workers != 1 else ''}" if workers else device))
    return f'<div class="headline">{"".join(cells)}</div>'


def _card(label: str, value: str) -> str:
    return f'<div class="card"><div class="value">{html.escape(value)}</div><div class="label">{html.escape(label)}</div></div>'


RUN_COLUMNS = (("started_at", "started (UTC)"), ("rows_this_run", "rows"), ("tokens_per_s", "tokens/s"),
               ("tokens_per_s_e2e", "tokens/s with start-up"), ("startup_s", "start-up s"),
               ("decode_s", "decoding s"), ("wall_time_s", "wall s"), ("num_workers", "workers"), ("device", "device"))


def history(stats: dict | None) -> str:
    """One row per run that generated rows (the summary's ``runs``)."""
    runs = (stats or {}).get("runs") or []
    if not runs:
        return ""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in (("", "run"), *RUN_COLUMNS))
    body = "".join("<tr>" + f"<td>{i}</td>" + "".join(f"<td>{html.escape(_run_cell(key, run.get(key)))}</td>"
                                                      for key, _ in RUN_COLUMNS) + "</tr>"
                   for i, run in enumerate(runs, 1))
    return (f'<h2>Runs</h2><table class="runs"><tr>{head}</tr>{body}</table>'
            "<p>Each run that generated rows, oldest first; the figures above describe the whole output "
            "(rows, errors, acceptance) or the latest of these runs (throughput, wall time).</p>")


def _run_cell(key: str, value) -> str:
    if key == "started_at" and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    return fmt(value)


def summary_table(stats: dict | None) -> str:
    if not stats:
        return "<p>No summary.parquet (the run did not finish): plots only.</p>"
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_breakable(fmt(v))}</td></tr>"
                    for k, v in stats.items() if k != "runs")
    return f'<h2>Summary</h2><table class="summary">{cells}</table>'


def _breakable(text: str) -> str:
    """Escaped text that may wrap after / , : and = (paths, JSON), never inside a word."""
    escaped = html.escape(text)
    for sep in ("/", ",", ":", "="):
        escaped = escaped.replace(html.escape(sep), html.escape(sep) + "<wbr>")
    return escaped


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and value.startswith("{"):
        try:  # JSON settings: spaces after separators, so the line can wrap between entries
            return json.dumps(json.loads(value), separators=(", ", ": "), sort_keys=True)
        except ValueError:
            return value
    return "-" if value is None else str(value)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simsd run report: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 64em; padding: 0 1em; color: #222; }}
div.headline {{ display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }}
div.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 1em; min-width: 9em; }}
div.card .value {{ font-size: 1.5em; font-weight: bold; white-space: nowrap; }}
div.card .label {{ color: #666; font-size: 0.85em; white-space: nowrap; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; vertical-align: top;
  word-break: normal; overflow-wrap: normal; hyphens: none; }}
table.summary th, table.runs th {{ white-space: nowrap; }}
table.runs td {{ white-space: nowrap; }}
section.plot img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head>
<body>
<h1>simsd run report</h1>
<p>Output <code>{title}</code>: {rows} row(s).</p>
{headline}
{history}
{sections}
{summary}
<script>
// For headless checks: how many plots decoded (all images self-contained, nothing is fetched),
// and how many words of the text were broken across two lines.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.plotsTotal = images.length;
  document.body.dataset.plotsLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  let broken = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {{
    if (node.parentElement.closest("script, style")) continue;
    for (const m of node.textContent.matchAll(/\\S+/g)) {{
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }}
  }}
  document.body.dataset.brokenWords = broken.length;
  document.body.dataset.brokenExamples = broken.slice(0, 5).join(" | ");
  document.body.dataset.scrollWidth = document.documentElement.scrollWidth;
}});
</script>
</body></html>
"""

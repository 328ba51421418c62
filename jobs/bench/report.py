"""Turn results.json into results.parquet, table.md and plot.png (plot only with matplotlib)."""
from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [("model_pair", "pair", "{}"), ("block_length", "B", "{}"), ("batch_size", "batch", "{}"),
           ("label", "decoder", "{}"), ("tokens_per_s", "tok/s", "{:.1f}"),
           ("tokens_per_s_e2e", "tok/s e2e", "{:.1f}"), ("ms_per_round", "ms/round", "{:.2f}"),
           ("ms_draft_per_round", "draft", "{:.2f}"), ("ms_verify_per_round", "verify/denoise", "{:.2f}"),
           ("ms_commit_per_round", "commit", "{:.2f}"), ("ms_host_per_round", "host", "{:.2f}"),
           ("mean_accepted_per_round", "tok/round", "{:.2f}"), ("acceptance_rate", "accept", "{:.2f}"),
           ("floor_ratio", "x floor", "{:.2f}"), ("speedup_vs_hf", "vs HF", "{:.1f}"),
           ("speedup_vs_vanilla_sequential", "vs seq", "{:.2f}"), ("accuracy", "acc", "{:.3f}"),
           ("peak_memory_gb", "mem GB", "{:.1f}")]


def table_markdown(records: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = []
    for r in records:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "" for k, _, fmt in COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows]) + "\n"


def merge_results(dirs: list[Path], out: Path) -> None:
    """One results.json from several runs of the same commit on the same GPU (records concatenated)."""
    docs = [json.loads((d / "results.json").read_text()) for d in dirs]
    merged = {**docs[0], "command": " + ".join(d["command"] for d in docs),
              "wall_s": sum(d.get("wall_s", 0) for d in docs), "records": [r for d in docs for r in d["records"]]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=1))


def write_report(out: Path) -> None:
    doc = json.loads((out / "results.json").read_text())
    records = doc["records"]
    header = f"GPU: {doc['gpu']}, commit {doc['commit']}, command `{doc['command']}`\n\n"
    (out / "table.md").write_text(header + table_markdown(records))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(records), out / "results.parquet")
    except Exception as err:  # a report must not fail on a column type
        print(f"results.parquet not written: {err}")
    _plot(records, out / "plot.png", doc["gpu"])


def _plot(records, path: Path, gpu: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    groups = sorted({(r["model_pair"], r["block_length"]) for r in records if r["decoder"] != "hf"})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), squeeze=False)
    for ax, (pair, block) in zip(axes[0], groups):
        sel = [r for r in records if r["model_pair"] == pair and r["block_length"] == block]
        for label in sorted({r["label"] for r in sel}):
            pts = sorted((r["batch_size"], r["tokens_per_s"]) for r in sel if r["label"] == label)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens/s", title=f"{pair}, B={block}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"decode tokens/s on {gpu}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

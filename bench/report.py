"""Turn a results document into the Markdown table and the PNG chart (no measuring here).

A results document is a dict: {"meta": {...}, "figures": {name: {..., "rows": [row, ...],
"chart": {...}}}, "errors": {name: message}}. A row is {"figure", "ours", "peer", "target",
"met"} with met True/False/None (None: not measured or no target).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURE_ORDER = ("capture", "writer_overhead", "api", "relay_drain", "latency", "throughput", "fanout",
                "connections", "resume", "faults", "scaleout")


def fmt(value: Any) -> str:
    """A compact human form of a measured value.

    >>> fmt(1234567.8)
    '1,234,568'
    >>> fmt(1.23456)
    '1.23'
    >>> fmt(None)
    '—'
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def met_mark(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def table_rows(results: dict) -> list[dict]:
    """Every row of every figure in the canonical order, then figures that failed to run."""
    figures = results.get("figures", {})
    names = [n for n in FIGURE_ORDER if n in figures] + [n for n in figures if n not in FIGURE_ORDER]
    rows: list[dict] = []
    for name in names:
        rows.extend(figures[name].get("rows", []))
    for name, message in sorted(results.get("errors", {}).items()):
        rows.append({"figure": f"{name}: did not run", "ours": None, "peer": None, "target": message[:120],
                     "met": None})
    return rows


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta.get('started', '?')} on {meta.get('cpus', '?')} CPUs, {meta.get('mode', '?')} mode, "
        f"{fmt(meta.get('duration_s'))} s. Load average before/after: {meta.get('loadavg_before', '?')} / "
        f"{meta.get('loadavg_after', '?')}.",
        "",
    ]
    if meta.get("merged"):
        lines += [f"Merged run: {meta['merged']}.", ""]
    if meta.get("caveat"):
        lines += [f"> {meta['caveat']}", ""]
    lines += ["| Figure | Ours | Peer | Target | Met? |", "| --- | --- | --- | --- | --- |"]
    for row in table_rows(results):
        cells = [str(row["figure"]), fmt(row.get("ours")), fmt(row.get("peer")), str(row.get("target") or ""),
                 met_mark(row.get("met"))]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    notes = [(n, f["notes"]) for n, f in results.get("figures", {}).items() if f.get("notes")]
    if notes:
        lines += ["", "## Notes", ""]
        for name, note in notes:
            lines.append(f"- **{name}**: {note}")
    lines += ["", "Chart: `bench/results/latest.png`. Raw figures: `bench/results/latest.json`.", ""]
    return "\n".join(lines)


def chart_series(results: dict) -> dict[str, dict[str, Any]]:
    """Merge the figures' chart contributions: {"latency": {label: summary}, "throughput": {...}, "memory": {...}}."""
    merged: dict[str, dict[str, Any]] = {"latency": {}, "throughput": {}, "memory": {}}
    for fig in results.get("figures", {}).values():
        for kind, series in (fig.get("chart") or {}).items():
            merged.setdefault(kind, {}).update({k: v for k, v in series.items() if v is not None})
    return merged


def render_png(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = chart_series(results)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    ax = axes[0]
    lat = series["latency"]
    labels = list(lat)
    width = 0.27
    for i, (key, name) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))):
        xs = [j + (i - 1) * width for j in range(len(labels))]
        ax.bar(xs, [lat[lb].get(key) or 0 for lb in labels], width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("commit-to-receiver latency (ms, log)")
    ax.set_title("Latency percentiles")
    ax.legend()
    for ax, kind, ylabel, title in ((axes[1], "throughput", "per second (log)", "Throughput"),
                                    (axes[2], "memory", "KB per idle connection", "Memory per connection")):
        data = series.get(kind, {})
        names = list(data)
        colors = ["tab:blue" if n.startswith("ours") else "tab:gray" for n in names]
        ax.bar(range(len(names)), [data[n] for n in names], color=colors)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        if kind == "throughput":
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title + " (blue: ours, grey: peers/baselines)")
    meta = results.get("meta", {})
    fig.suptitle(f"bench {meta.get('started', '')} ({meta.get('mode', '')}, {meta.get('cpus', '?')} CPUs, "
                 f"shared machine: noisy)")
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def write_all(results: dict, out_dir: Path) -> dict[str, Path]:
    """latest.json, latest.md and latest.png, each written to a temp file first then renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "latest.json", "md": out_dir / "latest.md", "png": out_dir / "latest.png"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(paths["json"])
    tmp = paths["md"].with_suffix(".md.tmp")
    tmp.write_text(markdown(results))
    tmp.replace(paths["md"])
    tmp = out_dir / "latest.png.tmp"
    render_png(results, tmp)
    tmp.replace(paths["png"])
    return paths

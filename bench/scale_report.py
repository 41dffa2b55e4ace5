"""The scale bench's table (markdown), one-line progress and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("model", "workers", "updates/s", "MB/s", "raw MB/s", "ratio", "relay MB/s",
           "relay ratio", "to workers / update", "rejected", "peak RSS", "latency p50 / p99")


def _cells(row: dict[str, Any]) -> list[str]:
    def seconds(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f} s"

    return [row["size"].upper().replace("KB", " KB").replace("MB", " MB"), f"{row['fleet']:,}",
            f"{row['updates_per_s']:.1f}", f"{row['mb_per_s']:.1f}",
            f"{row['raw_mb_per_s']:.1f}", f"{row['ratio']:.2f}",
            f"{row['relay_mb_per_s']:.1f}", f"{row['relay_ratio']:.2f}",
            f"{row['model_sizes_per_update']:.2f} models",
            f"{100 * row['rejected_share']:.1f} %", f"{row['peak_rss_mb']:.0f} MB",
            f"{seconds(row['latency_p50_s'])} / {seconds(row['latency_p99_s'])}"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def describe(rows: list[dict[str, Any]]) -> str:
    return "\n".join(", ".join(f"{c}: {v}" for c, v in zip(COLUMNS, _cells(r), strict=True))
                     + f" (applied {r['applied']}, exit {r['exit_code']})" for r in rows)


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    """Coordinator MB/s and the raw broker's per model size, against fleet size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for size in dict.fromkeys(r["size"] for r in rows):
        mine = [r for r in rows if r["size"] == size]
        fleets = [r["fleet"] for r in mine]
        line = left.plot(fleets, [r["mb_per_s"] for r in mine], marker="o", label=size)[0]
        left.axhline(mine[0]["raw_mb_per_s"], color=line.get_color(), linestyle="--",
                     linewidth=1)
        left.axhline(mine[0]["relay_mb_per_s"], color=line.get_color(), linestyle=":",
                     linewidth=1)
        right.plot(fleets, [r["model_sizes_per_update"] for r in mine], marker="o", label=size)
    left.set(xscale="log", yscale="log", xlabel="simulated workers",
             ylabel="MB/s of updates (dashed: raw broker, dotted: relay)", title="throughput")
    right.set(xscale="log", xlabel="simulated workers", ylabel="model sizes to workers / update",
              title="traffic per applied update")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

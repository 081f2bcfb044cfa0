"""The report's figures (matplotlib, Agg backend, PNG): titled, labelled, the paper's numbers dashed beside ours.

The paper's Figures 3-5 are drawn for ML-10M and print no numbers, so the only published values
drawn here are Table 1's final RMSEs (dashed horizontal lines) where the data set is in Table 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["figure3", "figure4", "figure5", "table1_plot"]

_COLOURS = {"I-CFN": "tab:blue", "I-CFN++": "tab:cyan", "U-CFN": "tab:red", "U-CFN++": "tab:orange",
            "I-AutoRec": "tab:green", "ALS-WR": "tab:purple", "SVDFeature": "tab:brown", "BPMF": "tab:gray",
            "LLORMA": "tab:olive", "Linear I-CFN": "tab:pink", "I-CFN 2-layer": "navy", "I-CFN++ 2-layer": "teal"}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    from cfn_fast.fileio import atomic_write
    try:
        with atomic_write(path) as fh:                 # umask / existing mode, temp clean-up
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return path


def figure3(data: dict[str, Any], dataset: str, path: Path) -> Path:
    """Test RMSE against the masking ratio, one line per β (α = 1)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    masks = data["masks"]
    for beta in data["betas"]:
        ys = [data["rmse"][str(beta)].get(str(m)) for m in masks]
        pts = [(m, y) for m, y in zip(masks, ys) if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"β = {beta:g}")
    ax.set_title(f"Figure 3 — {data['method']} on {dataset}: denoising loss (α = 1)")
    ax.set_xlabel("masking ratio")
    ax.set_ylabel("test RMSE (final epoch)")
    ax.grid(alpha=0.3)
    ax.legend(title="reconstruction weight")
    ax.text(0.01, 0.01, "paper: ML-10M only, no printed values", transform=ax.transAxes, fontsize=7, color="gray")
    return _save(fig, path)


def figure4(data: dict[str, Any], dataset: str, paper: dict[str, float], path: Path) -> Path:
    """Test RMSE against the training ratio."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ratios = data["ratios"]
    for name, by_ratio in data["rmse"].items():
        pts = [(r, by_ratio.get(str(r))) for r in ratios if by_ratio.get(str(r)) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name, color=_COLOURS.get(name))
        if paper.get(name) is not None:
            ax.plot([0.9], [paper[name]], marker="x", linestyle="none", color=_COLOURS.get(name), markersize=9)
    if any(paper.get(n) is not None for n in data["rmse"]):
        ax.plot([], [], marker="x", linestyle="none", color="k", label="paper, 90/10 (Table 1)")
    ax.set_title(f"Figure 4 — RMSE vs training ratio, {dataset} (hyper-parameters fixed)")
    ax.set_xlabel("fraction of ratings used for training")
    ax.set_ylabel("test RMSE (final epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def figure5(curves: dict[str, list[float]], dataset: str, paper: dict[str, float], path: Path) -> Path:
    """Test RMSE after each epoch, U-CFN vs I-CFN; the paper's final figure dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        colour = _COLOURS.get(name)
        ax.plot(range(1, len(curve) + 1), curve, marker=".", label=f"{name} (ours)", color=colour)
        if paper.get(name) is not None:
            ax.axhline(paper[name], linestyle="--", color=colour, linewidth=1, label=f"{name} paper (Table 1)")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Figure 5 — RMSE by epoch, {dataset} (90/10, split 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test RMSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def table1_plot(rows: dict[str, dict[str, Any]], dataset: str, paper: dict[str, float], path: Path) -> Path:
    """Table 1 as bars with 95% intervals, paper's values as dashed ticks."""
    plt = _plt()
    names = [n for n, r in rows.items() if r.get("mean") is not None]
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    xs = range(len(names))
    means = [rows[n]["mean"] for n in names]
    errs = [rows[n]["ci"] or 0.0 for n in names]
    ax.bar(xs, means, yerr=errs, capsize=3, color=[_COLOURS.get(n, "tab:gray") for n in names], alpha=0.8,
           label="ours (final epoch, mean ± 95% CI)")
    first = True
    for x, n in zip(xs, names):
        if paper.get(n) is not None:
            ax.hlines(paper[n], x - 0.4, x + 0.4, colors="k", linestyles="--",
                      label="paper (Table 1)" if first else None)
            first = False
    lo = min(means + [v for v in paper.values() if v is not None] or [0.8]) - 0.02
    hi = max(means + [v for v in paper.values() if v is not None] or [1.0]) + 0.02
    ax.set_ylim(lo, hi)
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("test RMSE")
    ax.set_title(f"Table 1 — {dataset}, 90/10 splits")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)

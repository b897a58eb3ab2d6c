"""The FLEXMIX report's figures (PNG, matplotlib Agg): routing heatmap, k-sweep curve, opt-out matrix, quality against
inference cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def routing_heatmap(shares: np.ndarray, domains: list[str], experts: list[str], path: Path) -> Path:
    """shares (layers, domains, experts): share of each domain's tokens for which the expert is in the top-k, per
    layer."""
    plt = _pyplot()
    layers = shares.shape[0]
    fig, axes = plt.subplots(
        1, layers, figsize=(2.2 + 1.0 * len(experts) * layers * 0.55, 0.45 * len(domains) + 1.8), squeeze=False
    )
    for layer, ax in enumerate(axes[0]):
        image = ax.imshow(shares[layer], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(f"layer {layer}")
        ax.set_xticks(range(len(experts)), experts, rotation=90, fontsize=7)
        ax.set_yticks(range(len(domains)), domains if layer == 0 else [""] * len(domains), fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of tokens routed to the expert (top-k)")
    fig.suptitle("FlexOlmo routing: evaluated domain (rows) x expert (columns), per layer")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def k_sweep(ks: list[int], values: np.ndarray, errors: np.ndarray, default_k: int, path: Path, ylabel: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar(ks, values, yerr=errors, marker="o", capsize=3)
    ax.axvline(default_k, color="gray", linestyle="--", label=f"default k = {default_k}")
    ax.set_xlabel("active experts k")
    ax.set_ylabel(ylabel)
    ax.set_title("FlexOlmo: number of active experts")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def opt_out(delta: np.ndarray, errors: np.ndarray, removed: list[str], domains: list[str], path: Path) -> Path:
    """delta (removed expert, evaluated domain): change in bpb (positive = worse) when the expert is removed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(domains), 1.2 + 0.5 * len(removed)))
    bound = float(np.nanmax(np.abs(delta))) or 1.0
    image = ax.imshow(delta, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            bold = abs(delta[i, j]) > 2 * errors[i, j]
            ax.text(
                j,
                i,
                f"{delta[i, j]:+.3f}",
                ha="center",
                va="center",
                fontsize=6,
                fontweight="bold" if bold else "normal",
            )
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
    ax.set_yticks(range(len(removed)), [f"without {r}" for r in removed])
    fig.colorbar(image, ax=ax, label="Δ bits per byte vs full model (+ = worse)")
    ax.set_title("Opt-out: remove one expert (bold: |Δ| > 2 SE)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def quality_vs_cost(
    names: list[str], mflops: np.ndarray, values: dict[str, np.ndarray], errors: dict[str, np.ndarray], path: Path
) -> Path:
    """One panel per quality measure (y, ± 1 SE) against forward MFLOPs per token (x): the dense domain models as
    one grey group, every other model a labelled point (equal points share a label)."""
    plt = _pyplot()
    dense = np.array([name.startswith("dense ") for name in names])
    fig, axes = plt.subplots(1, len(values), figsize=(5.6 * len(values), 4.4), squeeze=False)
    for ax, (label, y) in zip(axes[0], values.items(), strict=True):
        for group, color, legend in ((dense, "0.6", "dense domain models"), (~dense, "C0", "other models")):
            if group.any():
                ax.errorbar(
                    mflops[group],
                    y[group],
                    yerr=errors[label][group],
                    fmt="o",
                    color=color,
                    capsize=3,
                    alpha=0.8,
                    label=legend,
                )
        shared: dict[tuple[float, float], list[str]] = {}
        for name, x_i, y_i, is_dense in zip(names, mflops, y, dense, strict=True):
            if not is_dense:
                shared.setdefault((float(x_i), round(float(y_i), 6)), []).append(name)
        for (x_i, y_i), labels in shared.items():
            ax.annotate("\n".join(labels), (x_i, y_i), textcoords="offset points", xytext=(5, 2), fontsize=6)
        ax.set_xlabel("forward MFLOPs per token")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Quality against inference cost")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

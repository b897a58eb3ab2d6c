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
    """One panel per quality measure (y, ± 1 SE) against forward MFLOPs per token (x): the dense domain models as one
    grey group, every other model its own colour and marker, named in one legend below the panels (labels beside the
    points would overlap where models cost the same)."""
    plt = _pyplot()
    dense = [name.startswith("dense ") for name in names]
    others = [i for i, is_dense in enumerate(dense) if not is_dense]
    markers = "osD^v<>PX*"
    fig, axes = plt.subplots(1, len(values), figsize=(5.0 * len(values), 4.0), squeeze=False)
    for ax, (label, y) in zip(axes[0], values.items(), strict=True):
        grey = [i for i, is_dense in enumerate(dense) if is_dense]
        if grey:
            ax.errorbar(
                mflops[grey],
                y[grey],
                yerr=errors[label][grey],
                fmt="o",
                color="0.65",
                capsize=2,
                label="dense domain models",
            )
        for position, i in enumerate(others):
            ax.errorbar(
                mflops[i],
                y[i],
                yerr=errors[label][i],
                fmt=markers[position % len(markers)],
                capsize=2,
                color=plt.get_cmap("tab20")(position % 20),
                label=names[i],
            )
        ax.set_xlabel("forward MFLOPs per token")
        ax.set_ylabel(label)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Quality against inference cost")
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(labels) + 3) // 4), 1, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

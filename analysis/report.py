"""compare.py's outputs: plots (PNG) and report.md, from runs and their evaluations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .decay import relative_upper_bound  # noqa: E402
from .extrapolation import LengthResult  # noqa: E402
from .runs import Run, mean_and_spread  # noqa: E402

COLORS = {"rope": "tab:blue", "learned": "tab:orange", "sinusoidal": "tab:green", "none": "tab:gray"}


def plot_curves(groups: dict[str, list[Run]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, runs in groups.items():
        for i, run in enumerate(runs):
            tokens, losses = run.val_curve()
            ax.plot(np.array(tokens) / 1e6, losses, color=COLORS.get(variant), alpha=0.85,
                    label=variant if i == 0 else None)  # fmt: skip
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss during training (one line per run)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label(variant: str, method: str) -> str:
    return (
        variant
        if method == "plain"
        else f"{variant} + {'position interpolation' if method == 'linear' else 'NTK-aware'}"
    )


def plot_positions(evaluations: dict[str, list[list[LengthResult]]], context: int, path: Path) -> None:
    """Loss at each position of the longest window each variant can read, averaged over seeds."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for variant, per_run in evaluations.items():
        methods = dict.fromkeys(r.method for r in per_run[0])
        for method in methods:
            usable = [max((r for r in results if r.method == method and r.loss is not None), key=lambda r: r.length)
                      for results in per_run]  # fmt: skip
            curve = np.mean([r.by_position for r in usable], axis=0)
            smooth = np.convolve(curve, np.ones(16) / 16, mode="valid")
            style = "-" if method == "plain" else "--" if method == "linear" else ":"
            ax.plot(np.arange(len(smooth)) + 8, smooth, style, color=COLORS.get(variant), label=label(variant, method))
    ax.axvline(context, color="black", lw=0.8)
    ax.text(context, ax.get_ylim()[0], " training context", va="bottom", fontsize=8)
    ax.set_xlabel("position in the window")
    ax.set_ylabel("validation loss (nats/token, 16-position mean)")
    ax.set_title("Loss along the window, past the training length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_decay(head_dim: int, theta: float, path: Path, max_distance: int = 512) -> None:
    bound = relative_upper_bound(head_dim, theta, max_distance)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(bound)
    ax.set_xlabel("relative distance")
    ax.set_ylabel("relative upper bound")
    ax.set_title(f"RoPE long-term decay (RoFormer 3.4.3), head dim {head_dim}, theta {theta:g}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(mean: float, spread: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None else "")


def results_table(groups, bpt: dict[str, float], params: dict[str, int]) -> list[str]:
    lines = ["| variant | runs | parameters | final val loss | perplexity | bits per byte | train tokens/s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant, runs in groups.items():
        losses = [r.final_val_loss for r in runs]
        ppl = [float(np.exp(v)) for v in losses]
        bpb = [v / np.log(2) / bpt[r.name] for v, r in zip(losses, runs, strict=True)]
        speed = [r.tokens_per_s for r in runs]
        lines.append(
            f"| {variant} | {len(runs)} | {params[variant]:,} | {fmt(*mean_and_spread(losses))} | "
            f"{fmt(*mean_and_spread(ppl), 2)} | {fmt(*mean_and_spread(bpb))} | {fmt(*mean_and_spread(speed), 0)} |"
        )
    return lines


def extrapolation_table(evaluations: dict[str, list[list[LengthResult]]], factors, context: int) -> list[str]:
    header = "| variant | " + " | ".join(f"{f:g}x ({int(context * f)})" for f in factors) + " |"
    lines = [header, "|---" * (len(factors) + 1) + "|"]
    notes = set()
    for variant, per_run in evaluations.items():
        for method in dict.fromkeys(r.method for r in per_run[0]):
            cells = []
            for f in factors:
                found = [r for results in per_run for r in results if r.method == method and r.factor == f]
                values = [r.loss for r in found if r.loss is not None]
                if not found:
                    cells.append("(as plain)")
                elif values:
                    cells.append(fmt(*mean_and_spread(values)))
                else:
                    cells.append("n/a")
                    notes.add(f"{variant}: {found[0].note}")
            lines.append(f"| {label(variant, method)} | " + " | ".join(cells) + " |")
    return lines + [""] + [f"n/a: {n}." for n in sorted(notes)]

"""Figures of the anti-spoofing chapter (kept here so that the notebook stays a sequence of calls)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from facelab.plotting import PALETTE

__all__ = ["plot_feature_space", "plot_training", "plot_dispatch"]

_ORDER = ["live", "print", "replay", "mask3d", "adversarial", "faceswap", "morph"]


def plot_feature_space(ax, table: pd.DataFrame, title: str = "") -> None:
    """Scatter of :func:`~facelab.antispoof.experiments.feature_table` coloured by attack type, with the live and
    fake class centres (stars) and the centre of every attack type (labelled crosses)."""
    kinds = [k for k in _ORDER if k in set(table["attack"])]
    for i, k in enumerate(kinds):
        t = table[table["attack"] == k]
        ax.scatter(t["pc1"], t["pc2"], s=9, alpha=0.55, color=PALETTE[i % len(PALETTE)], label=k,
                   marker="o" if k == "live" else ("s" if t["family"].iloc[0] == "physical" else "^"))
        ax.annotate(k, (t["pc1"].mean(), t["pc2"].mean()), fontsize=8, fontweight="bold", ha="center")
    for live, name in ((1, "live centre"), (0, "fake centre")):
        t = table[table["live"] == live]
        ax.scatter(t["pc1"].mean(), t["pc2"].mean(), marker="*", s=260, color="k" if live else "#d1495b",
                   edgecolor="white", zorder=5, label=name)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")


def plot_training(ax, histories: dict, column: str, title: str = "") -> None:
    """One line per variant of a logged training column (``ce``, ``centre_distance``, ...)."""
    for i, (name, h) in enumerate(histories.items()):
        if len(h) and column in h:
            ax.plot(h["step"], h[column], label=name, color=PALETTE[i % len(PALETTE)])
    ax.set(title=title or column, xlabel="step", ylabel=column)


def plot_dispatch(axes, dispatch: np.ndarray, grid: int) -> None:
    """Dispatch weights of a few slots over the patch grid (the [CLS] token is dropped)."""
    for j, ax in enumerate(np.ravel(axes)):
        ax.imshow(dispatch[1:, j].reshape(grid, grid), cmap="magma")
        ax.set_title(f"slot {j}", fontsize=8)
        ax.axis("off")

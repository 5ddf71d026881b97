"""Figure helpers shared by every plot of the project (matplotlib, Agg: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: no global state, safe in threads)

DPI = 100

__all__ = ["DPI", "Figure", "finish_axis", "no_data", "save"]


def no_data(ax, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="grey")


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def finish_axis(ax, drawn: bool, loc: str = "best", handles: list | None = None) -> None:
    """Grid, then a legend for what was drawn or a visible 'no data' mark, so an empty plot is never mistaken
    for a flat line. `handles`: legend entries of twin axes too."""
    ax.grid(alpha=0.3)
    if not drawn:
        no_data(ax)
    elif handles:
        ax.legend(handles=handles, loc=loc, fontsize="small")
    elif ax.get_legend_handles_labels()[1]:     # unlabelled lines only (e.g. γ = 0 has no acceptance): no legend
        ax.legend(loc=loc, fontsize="small")

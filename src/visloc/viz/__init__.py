"""Figures (matplotlib, Agg canvas, no display) and the HTML report."""

from .plots import plot_matches, plot_retrieval, plot_trajectories_topview, save_figure, topview_axes
from .report import write_report

__all__ = [
    "plot_matches",
    "plot_retrieval",
    "plot_trajectories_topview",
    "save_figure",
    "topview_axes",
    "write_report",
]

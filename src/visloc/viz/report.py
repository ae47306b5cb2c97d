"""A small self-contained HTML report: the localization table, the figures and the run's config.

The page has inline CSS and no scripts; figures are referenced by paths relative to the report, so
the output folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..evaluation.localization import LocalizationResults
from ..io.atomic import write_text

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
tr.overall td { font-weight: bold; border-top: 2px solid #888; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _table_html(results: LocalizationResults) -> str:
    header, rows = results.table_rows()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cls = ' class="overall"' if k == len(rows) - 1 else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    rows_html = "\n".join(body)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows_html}\n</tbody>\n</table>"


def _resolve_figure(path: Path, out_dir: Path) -> Path:
    """A relative figure path is taken from the working directory, or from ``out_dir`` if only there."""
    if not path.is_absolute() and not path.exists() and (out_dir / path).exists():
        path = out_dir / path
    if not path.exists():
        logger.warning("report figure %s does not exist", path)
    return path.resolve()


def _relative_url(path: Path, out_dir: Path) -> str:
    return quote(Path(os.path.relpath(path, out_dir.resolve())).as_posix())


def write_report(
    out_dir: str | Path,
    results: LocalizationResults,
    figures: Sequence[tuple[str, Path]],
    title: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` atomically.

    Args:
        out_dir: folder of the report (created if needed); figures should live in it or below.
        results: localization results; shown as a per-scene table with an overall row.
        figures: ``(caption, path)`` pairs, shown in order, linked by their path relative to
            ``out_dir`` (a relative ``path`` is read from the working directory, or from ``out_dir``
            when it exists only there).
        title: page title and heading.
        extra: configuration, versions, ... shown as JSON in a ``<pre>`` block.

    Returns:
        Path of ``report.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style></head>',
        "<body>",
        f"<h1>{esc(title)}</h1>",
        "<h2>Localization</h2>",
        "<p>Median errors over all queries: a query that was not localized counts as an infinite "
        "error, so <code>inf</code> means the median query was not localized. Shares within each "
        "(translation, rotation) threshold are in percent of all queries.</p>",
        _table_html(results),
    ]
    if results.ignored_estimates:
        parts.append(
            f"<p>{len(results.ignored_estimates)} estimate(s) without ground truth were ignored.</p>"
        )
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in figures:
            url = esc(_relative_url(_resolve_figure(Path(path), out_dir), out_dir))
            parts.append(
                f'<figure><a href="{url}"><img src="{url}" alt="{esc(caption)}"></a>'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    config = {"visloc_version": __version__, **dict(extra or {})}
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{esc(json.dumps(config, indent=2, default=str))}</pre>")
    parts.append("<h3>Evaluation</h3>")
    parts.append(f"<pre>{esc(json.dumps(results.to_json()['config'], indent=2, default=str))}</pre>")
    parts += ["</body>", "</html>", ""]

    path = out_dir / "report.html"
    write_text(path, "\n".join(parts))
    logger.info("wrote report %s", path)
    return path

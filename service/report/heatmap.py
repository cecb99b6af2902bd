"""The pairwise Jaccard matrix as an SVG heatmap, rows ordered by clustering.

The order is the leaf order of average-linkage agglomerative clustering on 1 - Jaccard (ties
broken by position), so families of circuits sit next to each other. Each cell carries its value
in a ``<title>`` (hover) and, when there are at most ``LABEL_CELLS`` rows, as text in the cell; rows are
labelled on the left and columns on top (rotated), in a size readable at a glance up to 30 circuits.
Given the null model's tail probabilities, a cell not above chance (``p >= ALPHA``) is drawn grey,
marked ``data-chance="1"``, its title saying what chance expects.
"""

from __future__ import annotations

from html import escape

import numpy as np

LABEL_CELLS = 30
CELL = 32.0
LABEL_SIZE = 12.0
CHAR_WIDTH = 0.6
"""an upper bound of the average glyph width of sans-serif text, in ems"""
ALPHA = 0.05
"""a Jaccard whose tail probability under the null model is at least this is not above chance"""
CHANCE_GREY = "#bdbdbd"


def cluster_order(similarity: np.ndarray) -> list[int]:
    """Leaf order of average-linkage clustering on ``1 - similarity`` (NaN counts as 0 similarity)."""
    n = len(similarity)
    distance = 1.0 - np.nan_to_num(np.asarray(similarity, dtype=float), nan=0.0)
    clusters: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(clusters) > 1:
        keys = sorted(clusters)
        best = min(((distance[np.ix_(clusters[a], clusters[b])].mean(), a, b)
                    for i, a in enumerate(keys) for b in keys[i + 1:]))
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    return next(iter(clusters.values())) if clusters else []


def heatmap_svg(labels: list[str], values: list[list[float | None]], title: str,
                p: list[list[float | None]] | None = None, expected: list[list[float | None]] | None = None) -> str:
    """A heatmap of ``values`` (``None``: no common level) with rows and columns in cluster order, both labelled;
    cells whose tail probability ``p`` is at least ``ALPHA`` are grey (``expected``: chance's value, in their
    titles)."""
    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    tails = np.array([[np.nan if v is None else v for v in row] for row in p], dtype=float) if p else None
    order = cluster_order(grid)
    n = len(order)
    label_width = LABEL_SIZE * CHAR_WIDTH * max((len(s) for s in labels), default=0)
    left, top = 12 + label_width, 30 + label_width
    parts = [f'<text x="4" y="16" font-size="13">{escape(title)}</text>']
    for c, j in enumerate(order):
        x = left + c * CELL + CELL / 2 + 4
        parts.append(f'<text class="column" x="{x:.1f}" y="{top - 6:.1f}" transform="rotate(-90 {x:.1f} {top - 6:.1f})"'
                     f'>{escape(labels[j])}</text>')
    for r, i in enumerate(order):
        y = top + r * CELL
        parts.append(f'<text class="row" x="{left - 6:.0f}" y="{y + CELL / 2 + 4:.1f}" '
                     f'text-anchor="end">{escape(labels[i])}</text>')
        for c, j in enumerate(order):
            chance = None if tails is None or np.isnan(tails[i, j]) or tails[i, j] < ALPHA else (
                tails[i, j], expected[i][j] if expected else None)
            parts.append(_cell(r, c, left + c * CELL, y, grid[i, j], f"{labels[i]} vs {labels[j]}", n <= LABEL_CELLS,
                               chance))
    width, height = left + n * CELL + 10, top + n * CELL + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width:.0f}" height="{height:.0f}" '
            f'font-family="sans-serif" font-size="{LABEL_SIZE:g}">' + "".join(parts) + "</svg>")


def _cell(row: int, col: int, x: float, y: float, v: float, pair: str, label: bool,
          chance: tuple[float, float | None] | None) -> str:
    text = "n/a" if np.isnan(v) else f"{v:.2f}"
    fill, mark, note = colour(v), "", ""
    if chance is not None:
        p, expected = chance
        fill, mark = CHANCE_GREY, ' data-chance="1"'
        note = f" (not above chance: p = {p:.2g}" + ("" if expected is None else f", expected {expected:.2f}") + ")"
    out = (f'<rect class="cell" data-row="{row}" data-col="{col}"{mark} x="{x:.1f}" y="{y:.1f}" '
           f'width="{CELL - 1}" height="{CELL - 1}" fill="{fill}"><title>{escape(pair)}: {text}{note}</title></rect>')
    if label and not np.isnan(v):
        ink = "#ffffff" if v > 0.6 and chance is None else "#222222"
        out += (f'<text x="{x + CELL / 2 - 0.5:.1f}" y="{y + CELL / 2 + 3.5:.1f}" text-anchor="middle" font-size="10" '
                f'fill="{ink}">{text}</text>')
    return out


def colour(v: float) -> str:
    """White (0) to dark blue (1); light grey where there is no value."""
    if np.isnan(v):
        return "#eeeeee"
    t = min(max(v, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * t) for c in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"

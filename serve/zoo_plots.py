"""Pictures of the model zoo table that read at a glance: accuracy against size, accuracy through history,
accuracy as corruptions grow and as an attack's budget grows, and the transfer matrix of attacks.

The first two take the zoo table's rows (a list of dicts or a pandas DataFrame with "architecture" (display
name), "name", "val accuracy" (0-1) and "params (M)": ``TABLE_COLUMNS``), the others the curves or matrix they
draw; each returns an RGB PIL image. Rows without an accuracy are left out, and with nothing left to draw a
function gives a placeholder image that says so (never ``None``, so an image component always has something to
show). Drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never pyplot: no global state, so concurrent
requests cannot draw into each other's plots.

In the first two, every point is labelled; labels are placed greedily, each at the first of a ring of offsets around its
point where it overlaps no label or point placed before and stays inside the axes.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from PIL import Image

from explain.figures import figure_to_image
from robustness.adversarial_report import BUDGETS

__all__ = ["accuracy_vs_parameters", "adversarial_by_epsilon", "evolution", "paper_years", "robustness_by_severity",
           "transfer_heatmap"]

SIZE_IN, DPI = (8.0, 5.0), 100  # 800 x 500 px
TABLE_COLUMNS = ("architecture", "name", "val accuracy", "params (M)")  # what the table's plots read of a row
POINT = "#1f77b4"
LOG_SPREAD = 4.0  # a largest/smallest parameter ratio beyond which the x axis is logarithmic


def paper_years(names) -> dict[str, int]:
    """The year of each architecture's paper, from the registry's ``year`` class attribute; names without one
    (or not registered) are left out."""
    from architectures import model_class
    years = {}
    for name in names:
        try:
            year = getattr(model_class(name), "year", None)
        except ValueError:
            continue
        if year is not None:
            years[name] = int(year)
    return years


def _rows(frame) -> list[dict]:
    """The rows with a usable accuracy and parameter count, as dicts."""
    if frame is None:
        return []
    records = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame)
    rows = []
    for record in records:
        try:
            accuracy, params = float(record["val accuracy"]), float(record["params (M)"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(accuracy) and math.isfinite(params) and params > 0:
            rows.append({**record, "val accuracy": accuracy, "params (M)": params})
    return rows


def _placeholder(message: str) -> Image.Image:
    figure = Figure(figsize=SIZE_IN, dpi=DPI)
    figure.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="#555")
    return figure_to_image(figure)


# Offsets (points) tried for a label, nearest first: right, left, above, below, then the diagonals, further out.
_OFFSETS = [(dx * r, dy * r) for r in (1, 1.8, 2.8, 4)
            for dx, dy in ((7, -4), (-7, -4), (0, 9), (0, -15), (7, 8), (-7, 8), (7, -14), (-7, -14))]


def _place_labels(figure: Figure, ax, xs, ys, labels, radii, avoid=()) -> list:
    """Put each label next to its point where it overlaps no earlier label, no point and nothing in ``avoid``
    (artists such as the legend); returns the boxes (display pixels) of the placed labels, for the tests."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()   # runs the layout once; it is then frozen so the boxes stay true
    figure.set_layout_engine("none")
    axes_box = ax.get_window_extent(renderer)
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    obstacles = [(cx - r, cy - r, cx + r, cy + r) for (cx, cy), r in zip(centres, radii)]
    obstacles += [tuple(artist.get_window_extent(renderer).extents) for artist in avoid]
    placed: list[tuple[float, float, float, float]] = []
    scale = figure.dpi / 72  # pixels per point

    def clear(box):
        x0, y0, x1, y1 = box
        if x0 < axes_box.x0 or x1 > axes_box.x1 or y0 < axes_box.y0 or y1 > axes_box.y1:
            return False
        return not any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed + obstacles)

    boxes = [None] * len(labels)
    for i in sorted(range(len(labels)), key=lambda i: (ys[i], xs[i])):
        probe = ax.text(0, 0, labels[i], fontsize=9)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width, extent.height
        cx, cy = centres[i]
        candidates = []
        for dx, dy in _OFFSETS:
            left = cx + dx * scale if dx > 0 else (cx + dx * scale - w if dx < 0 else cx - w / 2)
            candidates.append((dx, dy, (left, cy + dy * scale, left + w, cy + dy * scale + h)))
        # Crowded everywhere: the nearest right-hand spot, overlapping rather than leaving a point unnamed.
        dx, dy, box = next((c for c in candidates if clear(c[2])), candidates[0])
        far = abs(dx) > 10 or abs(dy) > 16
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=((box[0] - cx) / scale, (box[1] - cy) / scale),
                    textcoords="offset points", fontsize=9, ha="left", va="bottom", color="#222",
                    arrowprops=dict(arrowstyle="-", color="#999", lw=0.7, shrinkA=0, shrinkB=4) if far else None)
        placed.append(box)
        boxes[i] = box
    return boxes


def _log_ticks(ax, low: float, high: float) -> None:
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
             if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _accuracy_axis(ax, accuracies) -> None:
    low, high = min(accuracies), max(accuracies)
    pad = max(1.0, (high - low) * 0.15)
    ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def accuracy_vs_parameters(frame, _boxes: list | None = None) -> Image.Image:
    """Validation accuracy against parameters, every point labelled with its architecture's display name.

    The x axis is logarithmic when the largest model has more than ``LOG_SPREAD`` times the parameters of
    the smallest. ``_boxes``, if given a list, receives the label boxes (for tests).
    """
    rows = _rows(frame)
    if not rows:
        return _placeholder("no trained models to plot yet")
    xs = [row["params (M)"] for row in rows]
    ys = [row["val accuracy"] * 100 for row in rows]
    labels = [str(row.get("architecture") or row.get("name") or "?") for row in rows]
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(xs, ys, s=40, color=POINT, edgecolor="white", linewidth=0.8, zorder=3)
    low, high = min(xs), max(xs)
    if high / low > LOG_SPREAD:
        ax.set_xscale("log")
        ax.set_xlim(low / 1.6, high * 1.6)
        _log_ticks(ax, low / 1.6, high * 1.6)
    else:
        span = max(high - low, 0.2 * high, 0.05)
        ax.set_xlim(max(0, low - span * 0.35), high + span * 0.35)
    _accuracy_axis(ax, ys)
    ax.set_xlabel("parameters (millions)")
    ax.set_title("Accuracy against size: up and to the left is better", fontsize=12)
    boxes = _place_labels(figure, ax, xs, ys, labels, [5] * len(xs))
    if _boxes is not None:
        _boxes.extend(boxes)
    return figure_to_image(figure)


def evolution(frame, years: dict[str, int], _boxes: list | None = None) -> Image.Image:
    """Accuracy by the year of the architecture's paper; a point's area is proportional to its parameters.

    ``years`` maps registry names to years (``paper_years``); rows whose name has no year are left out.
    """
    rows = [row for row in _rows(frame) if years.get(row.get("name")) is not None]
    if not rows:
        return _placeholder("no trained models with a paper year to plot yet")
    xs = [float(years[row["name"]]) for row in rows]
    ys = [row["val accuracy"] * 100 for row in rows]
    params = [row["params (M)"] for row in rows]
    labels = [str(row.get("architecture") or row["name"]) for row in rows]
    per_million = 220 / max(params)  # the largest model gets a marker of 220 points² area
    sizes = [max(12.0, p * per_million) for p in params]
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(xs, ys, s=sizes, color=POINT, alpha=0.75, edgecolor="white", linewidth=0.8, zorder=3)
    first, last = min(xs), max(xs)
    span = max(last - first, 4)
    ax.set_xlim(first - span * 0.12, last + span * 0.22)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0f}"))
    ax.xaxis.get_major_locator().set_params(integer=True)
    _accuracy_axis(ax, ys)
    ax.set_xlabel("year of the paper")
    ax.set_title("How CNNs evolved: accuracy by the year of the paper", fontsize=12)
    # The size legend: three reference models, rounded to readable sizes.
    nice = [v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
            if min(params) / 2 <= v <= max(params)]
    references = nice[-3:] or [float(f"{max(params):.1g}")]
    for value in references:
        ax.scatter([], [], s=max(12.0, value * per_million), color=POINT, alpha=0.75, edgecolor="white",
                   label=f"{value:g} M")
    legend = ax.legend(title="area:\nparameters", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                       title_fontsize=8, labelspacing=1.4, borderpad=0.9, frameon=False)
    radii = [math.sqrt(s) / 2 * DPI / 72 for s in sizes]  # marker size is an area in points²
    boxes = _place_labels(figure, ax, xs, ys, labels, radii, avoid=[legend])
    if _boxes is not None:
        _boxes.extend(boxes)
    return figure_to_image(figure)


def robustness_by_severity(curves: dict[str, list[float]]) -> Image.Image:
    """Accuracy against corruption severity, one line per architecture: ``curves`` maps a display name to
    [clean accuracy, mean accuracy over the corruptions at severity 1, ..., 5] (0-1)."""
    if not curves:
        return _placeholder("no robustness measured yet (python -m tools.robustness)")
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    for i, (label, values) in enumerate(sorted(curves.items(), key=lambda item: -item[1][-1])):
        ax.plot(range(len(values)), [v * 100 for v in values], marker="o", color=f"C{i % 10}",
                linestyle="-" if i < 10 else "--", label=label)
    ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_xlabel("corruption severity (mean over the CIFAR-10-C corruptions measured)")
    ax.set_ylabel("validation accuracy (%), model alone")
    ax.set_title("Accuracy as the corruptions grow stronger", fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return figure_to_image(figure)


ATTACK_PANELS = {"served": "as served (the six-view average the app shows)", "alone": "the model alone (one view)"}


def adversarial_by_epsilon(curves: dict[str, dict[str, list[float]]]) -> Image.Image:
    """Accuracy against the attack's budget epsilon, one line per architecture, a panel per mode measured
    (served first): ``curves`` maps "served" and "alone" to {label: [unattacked accuracy, accuracy under the
    stronger of PGD and APGD-CE at 0.5/255, 1/255, ...]} (0-1); a list stops where the measurement has got to."""
    panels = [(mode, lines) for mode, lines in sorted(curves.items(), key=lambda item: item[0] != "served")
              if lines]
    if not panels:
        return _placeholder("no adversarial robustness measured for these weights yet\n"
                            "(python -m tools.adversarial)")
    figure = Figure(figsize=(6.0 + 4.0 * len(panels), 5.0), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    # One colour per architecture in both panels; past ten colours, dashed lines.
    labels = sorted({label for _, lines in panels for label in lines})
    styles = {label: (f"C{i % 10}", "-" if i < 10 else "--") for i, label in enumerate(labels)}
    for ax, (mode, lines) in zip(axes, panels):
        for label, values in sorted(lines.items(), key=lambda item: -item[1][-1]):
            colour, linestyle = styles[label]
            ax.plot(range(len(values)), [v * 100 for v in values], marker="o", color=colour, linestyle=linestyle,
                    label=label)
        ax.set_xticks(range(len(BUDGETS) + 1), ["clean", *BUDGETS])
        ax.set_ylim(0, 100)
        ax.set_xlabel("epsilon: the most each pixel may change, in 1/255")
        ax.set_title(ATTACK_PANELS.get(mode, mode), fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    axes[0].set_ylabel("accuracy under attack (%)")
    figure.suptitle("Accuracy under the worst case: the stronger of PGD and APGD-CE (L-infinity)", fontsize=12)
    return figure_to_image(figure)


def transfer_heatmap(transfer: dict | None, labels: dict[str, str] | None = None) -> Image.Image:
    """The transfer matrix (``tools.adversarial --transfer``) as a heatmap: a column per architecture the
    examples were made on, a row per architecture they were shown to, and a last row for the zoo's majority
    vote; each cell the accuracy that remained. The diagonal is the white-box attack. ``labels`` names the
    architectures for people (registry name -> display name); the registry's names otherwise."""
    if not transfer:
        return _placeholder("no transfer matrix measured for these weights yet\n"
                            "(python -m tools.adversarial --transfer)")
    names = transfer["architectures"]
    shown = [(labels or {}).get(name, name) for name in names]
    grid = np.array([[transfer["accuracy"][source][target] for source in names] for target in names]
                    + [[transfer["vote"][source] for source in names]])
    figure = Figure(figsize=(8.4, 7.4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(grid):
        ax.text(col, row, f"{value:.0%}", ha="center", va="center", fontsize=7,
                color="black" if value > 0.6 else "white")
    ax.axhline(len(names) - 0.5, color="white", linewidth=2)
    ax.set_xticks(range(len(names)), shown, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names) + 1), [*shown, "zoo's vote"], fontsize=8)
    ax.set_xlabel("examples made on (PGD, as served)")
    ax.set_ylabel("accuracy of (as served)")
    ax.set_title(f"Transfer: attacks at {transfer['epsilon']:g}/255 on {transfer['images']} validation images",
                 fontsize=11)
    figure.colorbar(image, ax=ax, fraction=0.04, label="accuracy")
    return figure_to_image(figure)

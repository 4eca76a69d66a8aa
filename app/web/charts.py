"""The runs page's two charts as geometry for server-drawn SVG: scales, ticks, bars and points.

The templates (templates/runs/_chart.html) only draw what these functions place, in a fixed viewBox
that scales with the page. No JavaScript: the charts render with the page, also without it.
"""
import math
from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT = 640, 300
LOG_RATIO = 100  # sizes that differ by more than this (two orders of magnitude) are drawn on a log scale
# The parts of a run's records, bottom to top: together they are its input (SPEC §2's two identities).
PARTS = ("loaded", "rejected", "skipped", "other")


@dataclass(frozen=True)
class Plot:
    """The plot area inside the viewBox (the axes' labels go around it)."""

    left: float = 62
    top: float = 36
    right: float = WIDTH - 14
    bottom: float = HEIGHT - 52

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def compact(n: float) -> str:
    """A tick value people read at a glance: 0, 250, 1.5k, 100k, 2M."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)


class Scale:
    """A vertical scale from 0 to `top` (at least 1): linear with about five round ticks, or logarithmic
    (log10(1 + v), so 0 stays on the axis) with a tick at each power of ten."""

    def __init__(self, top: float, *, log: bool = False, integer: bool = True):
        top = max(top, 1)
        self.log = log
        if log:
            self.max = 10 ** math.ceil(math.log10(top))
            self.values = [10 ** k for k in range(round(math.log10(self.max)) + 1)]
        else:
            step = _nice_step(top / 4)
            step = max(1, round(step)) if integer else step
            self.max = math.ceil(top / step - 1e-9) * step
            self.values = [i * step for i in range(round(self.max / step) + 1)]

    def share(self, value: float) -> float:
        """Where a value lies between the axis (0) and the top (1)."""
        if self.log:
            return math.log10(1 + max(value, 0)) / math.log10(1 + self.max)
        return max(value, 0) / self.max


def _ticks(scale: Scale, plot: Plot, fmt=compact) -> list[dict]:
    return [{"y": round(plot.bottom - scale.share(v) * plot.height, 1), "label": fmt(v)}
            for v in scale.values]


def _labelled(n: int, most: int) -> int:
    """Label every k-th slot so that at most `most` labels share the axis."""
    return max(1, math.ceil(n / most))


def _rect(part: str, x: float, bottom: float, width: float, height: float) -> dict:
    return {"part": part, "x": round(x, 1), "y": round(bottom - height, 1), "w": round(width, 1),
            "h": round(height, 1)}


def runs_chart(rows: list[dict]) -> dict:
    """Records per run (loaded, rejected, skipped, other outcomes), oldest run on the left.

    Stacked bars on a linear scale; when the runs' sizes differ by more than LOG_RATIO, a log scale
    with the parts side by side (stacking on a log scale would misstate them). Runs of 0 records do
    not count towards the ratio.
    """
    plot = Plot()
    runs = []
    for r in reversed(rows):
        parts = {"loaded": r["inserted"] + r["updated"], "rejected": r["rejected"], "skipped": r["skipped"],
                 "other": r["unchanged"] + r["stale"] + r["superseded"]}
        runs.append((r, parts, sum(parts.values())))
    sizes = [t for _, _, t in runs if t > 0]
    ratio = max(sizes) / min(sizes) if sizes else 1
    log = ratio > LOG_RATIO
    scale = Scale(max(sizes, default=1), log=log)
    slot = plot.width / max(len(runs), 1)
    every = _labelled(len(runs), 6)
    bars = []
    for i, (r, parts, total) in enumerate(runs):
        x0 = plot.left + i * slot
        rects = []
        if log:
            width = min(slot * 0.8 / len(PARTS), 10)
            start = x0 + (slot - width * len(PARTS)) / 2
            for j, part in enumerate(PARTS):
                height = scale.share(parts[part]) * plot.height
                rects.append(_rect(part, start + j * width, plot.bottom, width, height))
        else:
            width = min(slot * 0.7, 40)
            bottom = plot.bottom
            for part in PARTS:
                height = scale.share(parts[part]) * plot.height
                rects.append(_rect(part, x0 + (slot - width) / 2, bottom, width, height))
                bottom -= height
        bars.append({"run": r, "parts": parts, "total": total, "rects": rects, "slot_x": round(x0, 1),
                     "slot_w": round(slot, 1), "label_x": round(x0 + slot / 2, 1),
                     "label": f"#{r['id']}" if (len(runs) - 1 - i) % every == 0 else None})
    return {"width": WIDTH, "height": HEIGHT, "plot": plot, "log": log, "ratio": ratio, "bars": bars,
            "ticks": _ticks(scale, plot),
            "biggest": max(sizes, default=0), "smallest": min(sizes, default=0)}


def _percent(v: float) -> str:
    return f"{v:g} %"


def days_chart(days: list[dict]) -> dict | None:
    """Records loaded per day as bars (left axis) and the reject rate as a line with dots (right axis,
    0–100 %); None when no run falls on any of the days."""
    if not any(d["runs"] for d in days):
        return None
    plot = Plot(right=WIDTH - 66)
    scale = Scale(max(d["loaded"] for d in days))
    rate_scale = Scale(100, integer=False)
    slot = plot.width / len(days)
    width = min(slot * 0.7, 40)
    every = _labelled(len(days), 5)
    bars, lines, line = [], [], []
    for i, d in enumerate(days):
        x0 = plot.left + i * slot
        centre = x0 + slot / 2
        day = date.fromisoformat(d["day"])
        point = None
        if d["reject_rate"] is not None:
            y = plot.bottom - rate_scale.share(d["reject_rate"]) * plot.height
            point = {"x": round(centre, 1), "y": round(y, 1)}
            line.append(f"{point['x']},{point['y']}")
        elif line:
            lines.append(" ".join(line))
            line = []
        bars.append({"day": d, "rect": _rect("loaded", centre - width / 2, plot.bottom, width,
                                             scale.share(d["loaded"]) * plot.height),
                     "point": point, "slot_x": round(x0, 1), "slot_w": round(slot, 1),
                     "label_x": round(centre, 1),
                     "label": f"{day.day} {day:%b}" if (len(days) - 1 - i) % every == 0 else None})
    if line:
        lines.append(" ".join(line))
    return {"width": WIDTH, "height": HEIGHT, "plot": plot, "bars": bars, "lines": lines,
            "ticks": _ticks(scale, plot), "rate_ticks": _ticks(rate_scale, plot, _percent),
            "first": days[0]["day"], "last": days[-1]["day"],
            "loaded": sum(d["loaded"] for d in days), "rejected": sum(d["rejected"] for d in days),
            "checked": sum(d["checked"] for d in days)}

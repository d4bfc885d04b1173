"""Charts drawn on the server as inline SVG: no script, no CDN, readable without colour."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 180
LEFT = 48
BOTTOM = 22
TOP = 10


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** (len(str(int(value))) - 1))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def bar_chart(
    points: Sequence[tuple[str, float]], *, label: str, unit: str = "", highlight: Sequence[float] | None = None
) -> Markup:
    """Bars for `points` (label, value) in order; `highlight` (same length) draws a second, overlaid series
    (errors within requests, say). Each bar has a tooltip with its exact value."""
    top_value = _nice_ceiling(max((value for _, value in points), default=0.0))
    plot_width = WIDTH - LEFT - 4
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.7, 1.0)
    label_every = max(1, len(points) // 8)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_height * (1 - fraction)
        parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(top_value * fraction)}</text>')
    for index, (name, value) in enumerate(points):
        x = LEFT + index * slot + (slot - bar_width) / 2
        height = plot_height * value / top_value
        tip = f"{name}: {_exact(value)}{unit}"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_height - height:.1f}" width="{bar_width:.1f}" '
            f'height="{height:.1f}"><title>{escape(tip)}</title></rect>'
        )
        if highlight is not None and highlight[index] > 0:
            part = plot_height * highlight[index] / top_value
            parts.append(
                f'<rect class="bar error" x="{x:.1f}" y="{TOP + plot_height - part:.1f}" width="{bar_width:.1f}" '
                f'height="{part:.1f}"><title>{escape(f"{name}: {_exact(highlight[index])} errors")}</title></rect>'
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- every interpolated text above is escaped


def _exact(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"

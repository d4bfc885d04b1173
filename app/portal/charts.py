"""Charts drawn on the server as inline SVG: no script, no CDN, readable without colour."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

HEIGHT = 180
BOTTOM = 24
TOP = 16
# Labels under the bars on a wide screen; a phone shows every other one (the others are marked "minor").
LABELS = 8


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** (len(str(int(value))) - 1))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def bar_chart(
    points: Sequence[tuple[str, float]],
    *,
    label: str,
    unit: str = "",
    highlight: Sequence[float] | None = None,
    shown: Callable[[float], str] | None = None,
) -> Markup:
    """Bars for `points` (label, value) in order; `highlight` (same length) draws a second, overlaid series
    (errors within requests, say). Each bar has a tooltip with its exact value; `shown` writes a value (an
    amount of money, say) for the tooltips and the scale instead of the plain number and `unit`.

    Horizontal positions are percentages of the chart's width and there is no viewBox, so the chart
    stretches to its box while its text keeps the stylesheet's size in pixels: a viewBox would shrink the
    labels with the chart (to about 6 px on a phone)."""
    top_value = _nice_ceiling(max((value for _, value in points), default=0.0))
    plot_height = HEIGHT - BOTTOM - TOP
    slot = 100 / max(len(points), 1)
    bar_width = slot * 0.7
    label_every = max(1, len(points) // LABELS)
    parts = [
        f'<svg class="chart" width="100%" height="{HEIGHT}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_height * (1 - fraction)
        parts.append(f'<line class="axis" x1="0" x2="100%" y1="{y:.1f}" y2="{y:.1f}"/>')
    for index, (name, value) in enumerate(points):
        x = index * slot + (slot - bar_width) / 2
        height = plot_height * value / top_value
        tip = f"{name}: {shown(value) if shown else f'{_exact(value)}{unit}'}"
        parts.append(
            f'<rect class="bar" x="{x:.2f}%" y="{TOP + plot_height - height:.1f}" width="{bar_width:.2f}%" '
            f'height="{height:.1f}"><title>{escape(tip)}</title></rect>'
        )
        if highlight is not None and highlight[index] > 0:
            part = plot_height * highlight[index] / top_value
            parts.append(
                f'<rect class="bar error" x="{x:.2f}%" y="{TOP + plot_height - part:.1f}" width="{bar_width:.2f}%" '
                f'height="{part:.1f}"><title>{escape(f"{name}: {_exact(highlight[index])} errors")}</title></rect>'
            )
        if index % label_every == 0:
            minor = ' class="minor"' if index % (2 * label_every) else ""
            parts.append(
                f'<text{minor} x="{x + bar_width / 2:.2f}%" y="{HEIGHT - 6}" text-anchor="middle">{escape(name)}</text>'
            )
    # The scale's values sit on their lines at the left, drawn last so that a halo keeps them over the bars.
    for fraction in (0.5, 1.0):
        y = TOP + plot_height * (1 - fraction)
        scale = shown(top_value * fraction) if shown else _short(top_value * fraction)
        parts.append(f'<text class="scale" x="2" y="{y - 3:.1f}">{escape(scale)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- every interpolated text above is escaped


def _exact(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"

"""A key's usage as an SVG bar chart, drawn on the server (no script)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, TOP, BOTTOM = 600, 180, 12, 24
REFUSED = ("rate_limited", "quota_exceeded", "forbidden")


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    allowed_y: float
    allowed_height: float
    refused_y: float
    refused_height: float
    label: str  # the day and its counts: the bar's tooltip and accessible text
    tick: str | None  # the day under every seventh bar


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    baseline: float
    bars: list[Bar]
    peak: int
    allowed: int
    refused: int

    @property
    def summary(self) -> str:
        days = len(self.bars)
        return (
            f"Requests per day over the last {days} days: {self.allowed} allowed, "
            f"{self.refused} refused (rate limited, over quota or forbidden)."
        )


def usage_chart(buckets: list[dict[str, Any]]) -> Chart:
    """One bar per day: allowed requests below, refused ones stacked on top."""
    baseline = HEIGHT - BOTTOM
    drawable = baseline - TOP
    totals = [(int(b["allowed"]), sum(int(b[k]) for k in REFUSED)) for b in buckets]
    peak = max((a + r for a, r in totals), default=0)
    scale = drawable / peak if peak else 0.0
    slot = WIDTH / max(len(buckets), 1)
    bars = []
    for index, (bucket, (allowed, refused)) in enumerate(zip(buckets, totals, strict=True)):
        day = str(bucket["start"])[:10]
        allowed_height = allowed * scale
        refused_height = refused * scale
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.15, 2),
                width=round(slot * 0.7, 2),
                allowed_y=round(baseline - allowed_height, 2),
                allowed_height=round(allowed_height, 2),
                refused_y=round(baseline - allowed_height - refused_height, 2),
                refused_height=round(refused_height, 2),
                label=f"{day}: {allowed} allowed, {refused} refused",
                tick=day[5:] if index % 7 == 0 else None,
            )
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        baseline=baseline,
        bars=bars,
        peak=peak,
        allowed=sum(a for a, _ in totals),
        refused=sum(r for _, r in totals),
    )

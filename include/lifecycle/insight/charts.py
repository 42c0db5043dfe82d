"""The report's charts: matplotlib figures as inline SVG text, percents where they are shares."""

from __future__ import annotations

import io
import itertools
from datetime import date, timedelta
from typing import Any

from lifecycle.planning.plan import PHASES_IN_ORDER


def svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG text (no XML prolog), then closed."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg") :]


def figure(width: float = 9, height: float = 3.2, nrows: int = 1, ncols: int = 1,
           **kw: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small and searchable
    matplotlib.rcParams["svg.hashsalt"] = "lifecycle"  # the same data gives the same file
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def _percent_axis(axis: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))


def audience(daily: list[dict[str, Any]], first: date, last: date) -> str:
    """Eligible customers per phase and the messages sent per phase and channel, by day."""
    import matplotlib
    from matplotlib.collections import PolyCollection
    from matplotlib.dates import date2num

    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    fig, (ax1, ax2) = figure(10, 5.5, 2, 1, sharex=True)
    for phase in PHASES_IN_ORDER:
        eligible = {r["day"]: r["eligible"] for r in daily if r["phase"] == phase}
        ax1.plot(days, [eligible.get(d, 0) for d in days], label=phase)
    ax1.set_ylabel("eligible customers")
    ax1.legend(fontsize=8, ncol=5, loc="upper right")
    # Stacked bars, one collection per phase and channel: drawn as ax.bar draws them, in a
    # third of the time (ax.bar makes an artist of each of up to 300 bars).
    x = date2num(days)
    colours = itertools.cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    bottom = [0] * len(days)
    for phase in PHASES_IN_ORDER:
        for channel in ("sms", "email"):
            sent = {r["day"]: r[channel] for r in daily if r["phase"] == phase}
            values = [sent.get(d, 0) for d in days]
            if not any(values):
                continue
            colour = next(colours)
            bars = [[(d - 0.4, b), (d - 0.4, b + v), (d + 0.4, b + v), (d + 0.4, b)]
                    for d, b, v in zip(x, bottom, values, strict=True) if v]
            email = channel == "email"
            ax2.add_collection(PolyCollection(
                bars, label=f"{phase} {channel}", facecolors=colour, linewidths=0,
                edgecolors="black" if email else colour, hatch="//" if email else None))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax2.xaxis_date()
    ax2.autoscale_view()
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("messages sent")
    if any(bottom):
        ax2.legend(fontsize=7, ncol=5, loc="upper right")
    fig.autofmt_xdate()
    return svg(fig)


def bars(labels: list[str], values: list[float], xlabel: str) -> str:
    fig, ax = figure(9, max(1.8, 0.35 * len(labels) + 0.8))
    ax.barh(labels, values)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return svg(fig)


def histogram(counts: list[tuple[int, int]]) -> str:
    fig, ax = figure(9, 2.8)
    ax.bar([str(k) for k, _ in counts], [n for _, n in counts])
    ax.set_xlabel("messages sent in the period")
    ax.set_ylabel("customers")
    return svg(fig)


def uplift(rows: list[dict[str, Any]]) -> str:
    """Each phase's difference (messaged less control) with its 95% interval, in points."""
    shown = [r for r in rows if r["cmp"].low is not None]
    if not shown:
        return ""
    fig, ax = figure(9, 0.5 * len(shown) + 1.2)
    colours = {"effect": "#1a7f37", "no measurable effect": "#555", }
    for i, r in enumerate(shown):
        c = r["cmp"]
        mid = c.diff * 100
        ax.errorbar([mid], [i], xerr=[[mid - c.low * 100], [c.high * 100 - mid]], fmt="o",
                    capsize=4, color=colours.get(c.verdict, "#b26b00"))
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [r["phase"] for r in shown])
    ax.invert_yaxis()
    _percent_axis(ax.xaxis)
    ax.set_xlabel("conversion rate of messaged customers less the control group's, percentage "
                  "points (95% interval)")
    return svg(fig)


def funnel(rows: list[dict[str, Any]]) -> str:
    """Sent -> delivered -> opened -> clicked per channel, as percents of sent."""
    shown = [r for r in rows if r["sent"]]
    if not shown:
        return ""
    stages = ("sent", "delivered", "opened", "clicked")
    fig, ax = figure(9, 0.45 * len(stages) * len(shown) + 1)
    labels, values = [], []
    for r in shown:
        for s in stages:
            if r[s] is None:
                continue
            labels.append(f"{r['title']}: {s}")
            values.append(100 * r[s] / r["sent"])
    ax.barh(labels, values, color="#3b6ea8")
    for i, v in enumerate(values):
        ax.text(v + 1, i, f"{v:.0f}%", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    _percent_axis(ax.xaxis)
    ax.set_xlabel("share of the messages sent")
    return svg(fig)


def retention(rows: list[dict[str, Any]]) -> str:
    """Monthly retention, churn and repeat-purchase rates in percent, one line per club."""
    if not rows:
        return ""
    measures = (("crr", "retention rate (CRR)"), ("churn_rate", "churn rate"),
                ("repeat_purchase_rate", "repeat purchase rate"))
    fig, axes = figure(10, 2.8, 1, 3)
    clubs = sorted({r["club_id"] for r in rows})
    for ax, (key, title) in zip(axes, measures, strict=True):
        for club in clubs:
            pts = sorted((r["month"], r[key]) for r in rows
                         if r["club_id"] == club and r[key] is not None)
            ax.plot([m for m, _ in pts], [float(v) * 100 for _, v in pts], marker="o",
                    markersize=3, label=club)
        ax.set_title(title, fontsize=9)
        _percent_axis(ax.yaxis)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if len(clubs) > 1:
        axes[0].legend(fontsize=7)
    return svg(fig)


def simulation(pols: dict[str, Any], names: list[str], titles: dict[str, str],
               currency: str) -> str:
    fig, axes = figure(10, 2.6, 1, 3)
    for ax, (key, title) in zip(
        axes,
        [("messages_per_customer_year", "messages per customer per year"),
         ("cost", f"message cost, {currency}"),
         ("revenue_total", f"revenue caused, {currency}")],
        strict=True,
    ):
        ax.bar([titles[n] for n in names], [pols[n][key] for n in names],
               color=["#c44", "#2a7"][: len(names)])
        ax.set_title(title, fontsize=9)
    return svg(fig)


def contact_health(rows: list[dict[str, Any]]) -> str:
    """Dead and unconfirmed contacts as shares of each age bucket (time since a contact was
    last confirmed alive), beside the CLM article's dead share for that age."""
    if not any(r["contacts"] for r in rows):
        return ""
    fig, ax = figure(9, 3.2)
    x = list(range(len(rows)))
    share = [100 * r["dead"] / r["contacts"] if r["contacts"] else 0 for r in rows]
    unconfirmed = [100 * r["unconfirmed"] / r["contacts"] if r["contacts"] else 0 for r in rows]
    ax.bar([i - 0.2 for i in x], share, width=0.4, color="#c44", label="dead (measured)")
    ax.bar([i + 0.2 for i in x], unconfirmed, width=0.4, color="#bbb",
           label="unconfirmed (not known alive)")
    ref = [(i, r) for i, r in zip(x, rows, strict=True) if r["reference_low"] is not None]
    if ref:
        mid = [100 * (r["reference_low"] + r["reference_high"]) / 2 for _, r in ref]
        ax.errorbar([i for i, _ in ref], mid,
                    yerr=[[m - 100 * r["reference_low"] for m, (_, r) in zip(mid, ref,
                                                                              strict=True)],
                          [100 * r["reference_high"] - m for m, (_, r) in zip(mid, ref,
                                                                              strict=True)]],
                    fmt="D-", color="#222", capsize=4, label="dead, CLM article's reference")
    ax.set_xticks(x, [f"{r['label']}\n({r['contacts']:,} contacts)" for r in rows])
    ax.set_ylim(0, 105)
    _percent_axis(ax.yaxis)
    ax.set_ylabel("share of the bucket's contacts")
    ax.set_xlabel("time since the contact was last confirmed alive")
    ax.legend(fontsize=8, loc="upper left")
    return svg(fig)

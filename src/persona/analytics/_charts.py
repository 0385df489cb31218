"""The report's charts: matplotlib figures (Agg, no pyplot state) rendered to PNG bytes.

Every label that comes from the data (item ids, categories, property values) is shown as plain
text: math parsing is off (an id with ``$`` in it is not TeX) and long labels are cut.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ParameterError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_INSTALL = "pip install 'persona-recsys[report]' (or matplotlib)"
_COLOURS = ("#2f6db5", "#e07b39", "#3a9b5c", "#c0392b", "#8e6bbf", "#7f7f7f", "#b5a33a", "#2aa7b8")
_RC = {"text.parse_math": False, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
       "axes.titlesize": 10, "figure.dpi": 100, "svg.fonttype": "none"}


def require_matplotlib():
    """The matplotlib module, or a ParameterError that names the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ParameterError(f"the analytics report draws its charts with matplotlib, which is not installed; "
                             f"{_INSTALL}") from None
    return matplotlib


def matplotlib_figure(width: float = 8.0, height: float = 3.6) -> Figure:
    """A new figure on the Agg canvas (no pyplot, no global state)."""
    matplotlib = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    """The figure as PNG bytes (math parsing off: data labels are text)."""
    matplotlib = require_matplotlib()
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def label(x, width: int = 28) -> str:
    s = str(x).replace("\n", " ").replace("\r", " ")
    if hasattr(x, "strftime") and not isinstance(x, str):  # a period's start
        s = x.strftime("%Y-%m-%d")
    return s if len(s) <= width else s[: width - 1] + "\u2026"


def _plain_log(axis) -> None:
    """Log-scale ticks as plain numbers (the default labels are TeX, which is off here)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _rc(fn):
    def wrapped(*args, **kwargs):
        with require_matplotlib().rc_context(_RC):
            return fn(*args, **kwargs)
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


@_rc
def activity_chart(act: pd.DataFrame) -> Figure:
    fig = matplotlib_figure()
    ax = fig.add_subplot()
    x = act.index.tz_localize(None) if getattr(act.index, "tz", None) is not None else act.index
    cols = [c for c in act.columns if c != "active_users" and act[c].sum() > 0]
    for c, colour in zip(cols, _COLOURS * 4):
        ax.plot(x, act[c].to_numpy(), label=label(c, 20), color=colour, lw=1.4)
    ax.plot(x, act["active_users"].to_numpy(), label="active users", color="black", lw=1.2, ls="--")
    if len(cols) and act[cols].to_numpy().max() > 50 * max(act[cols].to_numpy().min(), 1):
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    ax.set_ylabel("per period")
    ax.set_title("Events per type and active users")
    ax.legend(loc="upper left", fontsize=8, ncol=min(len(cols) + 1, 5), frameon=False)
    fig.autofmt_xdate()
    return fig


@_rc
def funnel_chart(f: pd.DataFrame) -> Figure:
    """Users per step (one funnel), or the from-the-top conversion of each step per group."""
    if f.index.nlevels == 1:
        fig = matplotlib_figure(8.0, 0.6 + 0.45 * len(f))
        ax = fig.add_subplot()
        y = np.arange(len(f))[::-1]
        ax.barh(y, f["users"].to_numpy(), color=_COLOURS[0])
        for yi, (n, r) in zip(y, zip(f["users"], f["from_top"])):
            ax.text(n, yi, f"  {int(n):,}  ({r:.1%})" if np.isfinite(r) else f"  {int(n):,}", va="center")
        ax.set_yticks(y, [label(s) for s in f.index])
        ax.set_xlabel("users reaching the step")
        ax.set_xlim(0, max(float(f["users"].max()), 1.0) * 1.3)
        ax.set_title("Funnel")
        return fig
    groups = f.index.droplevel(-1).unique()[:12]
    steps = list(dict.fromkeys(f.index.get_level_values(-1)))[1:]
    fig = matplotlib_figure(8.0, 0.8 + 0.32 * len(groups) * max(len(steps), 1) / 1.5)
    ax = fig.add_subplot()
    h = 0.8 / max(len(steps), 1)
    y = np.arange(len(groups))[::-1]
    for j, (step, colour) in enumerate(zip(steps, _COLOURS * 4)):
        vals = [float(f.loc[(*(g if isinstance(g, tuple) else (g,)), step), "from_top"]) for g in groups]
        ax.barh(y - j * h, np.nan_to_num(vals), height=h, color=colour, label=label(step, 20))
    ax.set_yticks(y - h * (len(steps) - 1) / 2, [label(" / ".join(map(label, g)) if isinstance(g, tuple) else g)
                                                 for g in groups])
    ax.set_xlabel("share of the group's first-step users reaching the step")
    ax.set_xlim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Funnel by group (from the top)")
    return fig


@_rc
def retention_chart(r: pd.DataFrame) -> Figure:
    r = r.iloc[-20:, :16]
    fig = matplotlib_figure(8.0, 0.9 + 0.28 * len(r))
    ax = fig.add_subplot()
    vals = r.to_numpy(dtype=float)
    img = ax.imshow(np.ma.masked_invalid(vals), aspect="auto", cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black")
    ax.set_xticks(range(r.shape[1]), [str(c) for c in r.columns])
    ax.set_yticks(range(len(r)), [label(c) for c in r.index])
    ax.set_xlabel("periods since the cohort's first")
    ax.set_ylabel("cohort")
    ax.set_title("Cohort retention (share of the cohort active)")
    fig.colorbar(img, ax=ax, shrink=0.8)
    return fig


@_rc
def rfm_chart(groups: pd.DataFrame) -> Figure:
    fig = matplotlib_figure(8.0, 3.0)
    ax = fig.add_subplot()
    y = np.arange(len(groups))[::-1]
    ax.barh(y, groups["customers"].to_numpy(), color=_COLOURS[2])
    ax.set_yticks(y, [label(g) for g in groups.index])
    ax.set_xlabel("customers")
    ax.set_title("RFM groups")
    return fig


@_rc
def trends_chart(up: pd.DataFrame, down: pd.DataFrame, what: str) -> Figure:
    both = [(i, r) for i, r in up.iterrows()] + [(i, r) for i, r in down.iloc[::-1].iterrows()]
    fig = matplotlib_figure(8.0, 0.8 + 0.25 * max(len(both), 1))
    ax = fig.add_subplot()
    y = np.arange(len(both))[::-1]
    vals = np.log2([r["ratio"] for _, r in both]) if both else np.array([])
    ax.barh(y, vals, color=[_COLOURS[2] if v >= 0 else _COLOURS[3] for v in vals])
    ax.set_yticks(y, [label(i) for i, _ in both])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("log2 of the smoothed rate ratio (recent / previous window)")
    ax.set_title(f"Trending and declining {what}")
    return fig


@_rc
def rules_chart(rules: pd.DataFrame) -> Figure:
    fig = matplotlib_figure(8.0, 3.6)
    ax = fig.add_subplot()
    pts = ax.scatter(rules["support"], rules["confidence"], c=rules["lift"], cmap="viridis", s=18)
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("support (share of baskets)")
    ax.set_ylabel("confidence")
    ax.set_title("Basket rules (colour: lift)")
    fig.colorbar(pts, ax=ax, shrink=0.8, label="lift")
    return fig

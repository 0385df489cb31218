"""One self-contained HTML page of the shop's behaviour: summary, funnel, cohorts, RFM, trends, baskets.

The page carries everything inline: charts are PNGs (drawn by matplotlib, the ``report`` extra)
embedded as ``data:`` URIs, styles are inline, and there is no script at all -- a Content
Security Policy in the page forbids scripts and every external fetch, so a report mailed around
or opened from disk shows the same thing everywhere and cannot run anything. Every text that
comes from the data (item and user ids, categories, event properties, section titles) is
HTML-escaped.

Sections
--------
The built-in sections, in order: ``summary``, ``activity``, ``funnel``, ``retention``, ``rfm``,
``trends``, ``baskets`` and ``online`` (the on-site recommendation metrics of
``persona.analytics.online_metrics``, when that exists and the data is an EventStore).
``sections=`` picks and orders them. By default a section the data cannot support (no event
types for a funnel, no purchases for RFM) shows why instead of failing the report; a section
named in ``sections=`` raises.

``extra=`` adds sections after them: ``(title, content)`` pairs, where content is a pandas
DataFrame or Series (a table), a matplotlib Figure (a chart), a str (a paragraph), a dict (a
two-column table), a list of these, or a callable that receives the report's
:class:`~persona.analytics.EventTable` and returns one of these -- so a section computed from the
same events (a fairness audit, a model's metrics) costs no second read of the store.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._validate import check_int
from .._version import __version__
from ..errors import DataError, ParameterError, PersonaError
from ..typing import PathLike, TimePoint
from . import _charts
from ._events import EventTable, check_period, event_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["report", "SECTIONS"]

#: the built-in sections of :func:`report`, in their default order
SECTIONS = ("summary", "activity", "funnel", "retention", "rfm", "trends", "baskets", "online")

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1000px;
color:#1d1d1f;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.meta{color:#666;font-size:.85rem}nav ol{columns:2;font-size:.9rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1rem}th,td{padding:.2rem .6rem;
border-bottom:1px solid #eee;text-align:right;vertical-align:top}th{background:#f6f6f6}
td.t,th.t{text-align:left;max-width:22rem;overflow-wrap:anywhere}
.tw{overflow-x:auto}figure{margin:.5rem 0 1rem}img{max-width:100%;height:auto}figcaption{color:#666;font-size:.8rem}
.note{color:#8a5a00;background:#fff7e6;padding:.4rem .7rem;border-left:3px solid #e0a030}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{background:#f6f8fb;border-radius:6px;padding:.5rem .8rem;
min-width:8rem}.card b{display:block;font-size:1.15rem}
"""


class _Note(str):
    """A section's note (why it shows no result)."""


def report(data: Any, out: PathLike | None = "report.html", *, title: str = "Shop behaviour report",
           since: TimePoint | None = None, until: TimePoint | None = None,
           steps: Sequence = ("view", "cart", "purchase"), by=None, user_features=None, period: str = "week",
           categories=None, window="7D", basket: str = "user", purchase: str = "purchase",
           sections: Sequence[str] | None = None, extra: Sequence[tuple[str, Any]] = (),
           max_rows: int = 20) -> Path | str:
    """Write the behaviour analytics of a store (or any events) as one self-contained HTML page.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Read once (see :func:`~persona.analytics.event_table`) for every section.
    out : path or None, default "report.html"
        Where to write the page (atomically: a temporary file beside it, then renamed); None
        returns the HTML text instead.
    title : str
    since, until : time, optional
        Report on the events in ``[since, until)`` only.
    steps, by, user_features
        The funnel's (:func:`~persona.analytics.funnel`); ``user_features`` also gives ``by``
        its user attributes.
    period : {"day", "week", "month"}, default "week"
        The cohorts' period (:func:`~persona.analytics.cohort_retention`); activity is shown per
        day when the data span at most 120 days, else per week.
    categories : mapping, Series or catalogue table, optional
        Item id -> category, for trending categories (:func:`~persona.analytics.trends`).
    window : duration, default "7D"
        The trends' recent window.
    basket : str, default "user"
        What makes a basket (:func:`~persona.analytics.basket_rules`).
    purchase : str, default "purchase"
        The event type of purchases (RFM, summary, baskets).
    sections : sequence of str, optional
        Built-in sections to include, in order (see :data:`SECTIONS`); default all, each skipped
        with a note when the data cannot support it.
    extra : sequence of (title, content) pairs
        More sections: content is a DataFrame / Series, a matplotlib Figure, a str, a dict, a list
        of these, or a callable of the :class:`~persona.analytics.EventTable` returning one.
    max_rows : int, default 20
        Rows shown per table.

    Returns
    -------
    pathlib.Path or str
        The written file, or the HTML when ``out`` is None.

    Examples
    --------
    >>> import os, tempfile
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=50, seed=0)
    >>> path = ps.analytics.report(shop.events, os.path.join(tempfile.mkdtemp(), "report.html"),
    ...                            categories=shop.items, sections=["summary", "funnel"],
    ...                            extra=[("Catalogue", shop.items[["item_id", "category", "price"]])])
    >>> text = path.read_text(encoding="utf-8")
    >>> text.count("<img "), "<script" in text, "Catalogue" in text
    (1, False, True)
    """
    if not isinstance(title, str):
        raise ParameterError(f"report title: expected a str, got {type(title).__name__}")
    max_rows = check_int(max_rows, "max_rows", min=1, max=10_000)
    check_period(period)
    chosen = _sections(sections)
    extra = _extra(extra)
    _charts.require_matplotlib()  # before the work, not after it
    table = event_table(data, since=since, until=until)
    if not len(table):
        raise DataError("report: no events to report on" + (" in [since, until)" if since or until else ""))
    ctx = dict(steps=steps, by=by, user_features=user_features, period=period, categories=categories,
               window=window, basket=basket, purchase=purchase, max_rows=max_rows, since=since, until=until)
    parts = []
    for name in chosen:
        heading, build = _BUILDERS[name]
        try:
            body = build(table, data, ctx)
        except PersonaError as e:
            if sections is not None:
                raise
            body = [_Note(f"Not available for these events: {e}")]
        if body is not None:
            parts.append((heading, body))
    for heading, content in extra:
        parts.append((heading, _content(content, table)))
    page = _page(title, table, parts, max_rows)
    if out is None:
        return page
    return _write(Path(os.fspath(out)), page)


# ---------------------------------------------------------------------------------------------- arguments
def _sections(sections) -> list[str]:
    if sections is None:
        return list(SECTIONS)
    if isinstance(sections, str) or not hasattr(sections, "__iter__"):
        raise ParameterError(f"report sections: expected a list of names from {list(SECTIONS)}, got {sections!r}")
    out = list(sections)
    bad = [s for s in out if s not in SECTIONS]
    if bad:
        raise ParameterError(f"report sections: unknown {bad}; expected names from {list(SECTIONS)} "
                             f"(add your own with extra=[(title, content), ...])")
    return list(dict.fromkeys(out))


def _extra(extra) -> list[tuple[str, Any]]:
    if extra is None:
        return []
    if isinstance(extra, (str, Mapping)) or not hasattr(extra, "__iter__"):
        raise ParameterError(f"report extra: expected a list of (title, content) pairs, got {type(extra).__name__}")
    out = []
    for pair in extra:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ParameterError(f"report extra: expected (title, content) pairs with a str title, got {pair!r:.80}")
        out.append(pair)
    return out


# ---------------------------------------------------------------------------------------------- sections
def _summary(table: EventTable, data, ctx) -> list:
    from .overview import summary

    s = summary(table, purchase=ctx["purchase"])
    cards = {"events": f"{s['events']:,}", "users": f"{s['users']:,}", "items": f"{s['items']:,}"}
    if s["days"] is not None:
        cards["days"] = f"{s['days']:.1f}"
    if s["buyers"] is not None:
        cards["buyers"] = f"{s['buyers']:,} ({s['buyers'] / max(s['users'], 1):.1%})"
        cards["purchases"] = f"{s['purchases']:,}"
    if s["revenue"] is not None:
        cards["revenue"] = f"{s['revenue']:,.2f}"
    body: list = [_Cards(cards)]
    if s["first"] is not None:
        body.append(f"From {s['first']:%Y-%m-%d %H:%M} to {s['last']:%Y-%m-%d %H:%M} UTC; "
                    f"{s['events_per_user']:.1f} events per user; read from the {table.source}.")
    if s["events_per_type"]:
        body.append(("Events per type", s["events_per_type"]))
    return body


def _activity(table: EventTable, data, ctx) -> list:
    from .overview import activity

    table.require_time("activity")
    span_days = (int(table.time_ns.max()) - int(table.time_ns.min())) / 86400e9
    act = activity(table, "day" if span_days <= 120 else "week")
    act = act[[c for c in act.columns if c == "active_users" or act[c].sum() > 0]]
    return [_charts.activity_chart(act)]


def _funnel(table: EventTable, data, ctx) -> list:
    from .funnels import funnel

    f = funnel(table, steps=ctx["steps"], by=ctx["by"], user_features=ctx["user_features"])
    body: list = [_charts.funnel_chart(f)]
    show = f[["users", "from_previous", "from_previous_low", "from_previous_high", "from_top"]]
    body.append(("Users per step (from_previous with its 95% Wilson interval)", show))
    body.append("A user counts at a step when they did it at or after the time they first reached the step "
                "before." + (" Groups are fixed on the user's first step-0 event." if ctx["by"] is not None else ""))
    return body


def _retention(table: EventTable, data, ctx) -> list:
    from .cohorts import cohort_retention

    r = cohort_retention(table, ctx["period"])
    shown = r.iloc[-ctx["max_rows"]:, :16]
    return [_charts.retention_chart(r), (f"Share of each {ctx['period']}'s new users active n {ctx['period']}s "
                                         f"later (the latest {len(shown)} cohorts)", shown)]


def _rfm(table: EventTable, data, ctx) -> list:
    from .rfm import RFM_GROUPS, rfm_table

    t = rfm_table(table, purchase=ctx["purchase"])
    if not len(t):
        raise DataError(f"no {ctx['purchase']!r} events to score")
    g = t.groupby("group").agg(customers=("frequency", "size"), recency_days=("recency_days", "median"),
                               frequency=("frequency", "mean"), monetary=("monetary", "mean"))
    g = g.reindex([x for x in RFM_GROUPS if x in g.index])
    g["share"] = g["customers"] / g["customers"].sum()
    g = g[["customers", "share", "recency_days", "frequency", "monetary"]]
    return [_charts.rfm_chart(g), ("Customers per RFM group (median recency in days, mean frequency and "
                                   "monetary value)", g),
            "Scores 1-5 by the share of buyers doing worse; groups from the recency and frequency scores "
            "(see persona.analytics.rfm_table)."]


def _trends(table: EventTable, data, ctx) -> list:
    from .trending import trends

    body: list = []
    levels = [("items", dict(level="item"))]
    if ctx["categories"] is not None:
        levels.insert(0, ("categories", dict(level="category", categories=ctx["categories"])))
    n = min(10, ctx["max_rows"])
    for what, kw in levels:
        t = trends(table, window=ctx["window"], min_count=5 if what == "items" else 1, **kw)
        if not len(t):
            body.append(_Note(f"No {what} with events in the last two windows."))
            continue
        up, down = t[t["z"] > 0].head(n), t[t["z"] < 0].tail(n).iloc[::-1]
        body.append(_charts.trends_chart(up, down, what))
        body.append((f"Trending {what}", up))
        body.append((f"Declining {what}", down))
    body.append(f"Recent window: the last {ctx['window']} before the last event, against the window before it; "
                "z is the binomial z-score of the recent count, ratio the smoothed rate ratio.")
    return body


def _baskets(table: EventTable, data, ctx) -> list:
    from .baskets import basket_rules

    events = ctx["purchase"] if table.event_codes is not None else None
    rules = basket_rules(table, basket=ctx["basket"], events=events, top_k=max(ctx["max_rows"], 200))
    if not len(rules):
        return [_Note(f"No item pair shares {ctx['basket']} baskets often enough (min_count 2, lift >= 1).")]
    return [_charts.rules_chart(rules), (f"Top rules by lift ({rules.attrs['n_baskets']:,} baskets by "
                                         f"{ctx['basket']})", rules.head(ctx["max_rows"]))]


def _online(table: EventTable, data, ctx) -> list | None:
    from . import _NAMES

    store = table.store  # set when the events were read from an EventStore
    if "online_metrics" not in _NAMES or store is None:
        return None  # the on-site metrics read the store's impressions: nothing to show otherwise
    from . import online_metrics

    since, until = (ctx["since"], ctx["until"]) if data is store else table.read_window
    if since is None and until is None:
        m = online_metrics(store, events=table.frame)  # every event is read already: the store is read once
    else:  # impressions of a window need the outcomes just after it: let it read its own
        m = online_metrics(store, since=since, until=until)
    if isinstance(m, (list, tuple)) or not hasattr(m, "__len__"):
        return _content(m, table)
    if not len(m):
        return [_Note("No impressions logged in this store (EventStore.log_impression records what a page "
                      "showed), so there are no on-site metrics.")]
    return [("What the shown recommendations did, per group (persona.analytics.online_metrics)", m)]


_BUILDERS: dict[str, tuple[str, Callable]] = {
    "summary": ("Summary", _summary), "activity": ("Activity", _activity), "funnel": ("Funnel", _funnel),
    "retention": ("Cohort retention", _retention), "rfm": ("RFM segments", _rfm),
    "trends": ("Trends", _trends), "baskets": ("Basket affinity", _baskets),
    "online": ("On-site recommendations", _online),
}


# ---------------------------------------------------------------------------------------------- content
class _Cards(dict):
    """Headline numbers shown as cards."""


def _content(content, table: EventTable) -> list:
    """The parts of a section from what ``extra`` (or a built-in) gave."""
    if callable(content) and not _is_figure(content):
        content = content(table)
    items = content if isinstance(content, list) else [content]
    return items


def _is_figure(x) -> bool:
    return type(x).__name__ in ("Figure", "SubFigure") and hasattr(x, "savefig")


def _render(item, max_rows: int) -> str:
    import pandas as pd

    caption = None
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        caption, item = item
    if isinstance(item, _Note):
        return f'<p class="note">{_esc(item)}</p>'
    if isinstance(item, _Cards):
        cells = "".join(f'<div class="card">{_esc(k)}<b>{_esc(v)}</b></div>' for k, v in item.items())
        return f'<div class="cards">{cells}</div>'
    if isinstance(item, str):
        return f"<p>{_esc(item)}</p>"
    if _is_figure(item):
        data = base64.b64encode(_charts.png(item)).decode("ascii")
        alt = caption or _figure_title(item) or "chart"
        cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>'
    if isinstance(item, Mapping):
        item = pd.DataFrame({"value": list(item.values())}, index=pd.Index([str(k) for k in item], name=""))
    if isinstance(item, pd.Series):
        item = item.to_frame()
    if isinstance(item, pd.DataFrame):
        head = f"<h3>{_esc(caption)}</h3>" if caption else ""
        return head + _table(item, max_rows)
    raise ParameterError(f"report: cannot show a {type(item).__name__} in a section; give a DataFrame, Series, "
                         f"matplotlib Figure, str or dict (or a list of them, or a callable returning one)")


def _figure_title(fig) -> str:
    for ax in getattr(fig, "axes", []):
        t = ax.get_title()
        if t:
            return t
    return ""


def _table(df: pd.DataFrame, max_rows: int) -> str:
    """An HTML table of the first ``max_rows`` rows; index levels lead (unless a plain range); all text escaped."""
    import pandas as pd

    n = len(df)
    df = df.head(max_rows)
    plain = isinstance(df.index, pd.RangeIndex) and df.index.name is None
    levels = [] if plain else [df.index.get_level_values(i) for i in range(df.index.nlevels)]
    names = ["" if x is None else x for x in ([] if plain else df.index.names)] + list(df.columns)
    columns = [lv.to_numpy() for lv in levels] + [df.iloc[:, j].to_numpy() for j in range(df.shape[1])]
    dtypes = [lv.dtype for lv in levels] + list(df.dtypes)
    text = [not pd.api.types.is_numeric_dtype(d) or pd.api.types.is_bool_dtype(d) for d in dtypes]
    head = "".join(f'<th class="{"t" if t else "n"}">{_esc(c)}</th>' for c, t in zip(names, text))
    rows = []
    for rec in zip(*columns):
        cells = "".join(f'<td class="{"t" if t else "n"}">{_esc(_fmt(v))}</td>' for v, t in zip(rec, text))
        rows.append(f"<tr>{cells}</tr>")
    more = f'<p class="meta">{max_rows:,} of {n:,} rows shown.</p>' if n > max_rows else ""
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{more}'


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isnan(x):
            return ""
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.1f}"
    if hasattr(v, "strftime"):
        try:
            return v.strftime("%Y-%m-%d %H:%M") if (v.hour or v.minute) else v.strftime("%Y-%m-%d")
        except (ValueError, AttributeError):
            return str(v)
    return str(v)


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _page(title: str, table: EventTable, parts: list, max_rows: int) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#s{i}">{_esc(h)}</a></li>' for i, (h, _) in enumerate(parts, 1))
    body = []
    for i, (heading, items) in enumerate(parts, 1):
        inner = "\n".join(_render(x, max_rows) for x in items)
        body.append(f'<section id="s{i}"><h2>{_esc(heading)}</h2>\n{inner}\n</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style></head>\n<body>\n"
        f"<header><h1>{_esc(title)}</h1><p class=\"meta\">Made by persona {_esc(__version__)} on {now} from "
        f"{len(table):,} events.</p></header>\n<nav><ol>{toc}</ol></nav>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _write(path: Path, page: str) -> Path:
    if path.is_dir():
        raise ParameterError(f"report out: {str(path)!r} is a directory; pass a file name such as report.html")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ParameterError(f"report out: the directory {str(parent)!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path

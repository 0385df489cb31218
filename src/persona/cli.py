"""The ``persona`` command line: demo, train, recommend, evaluate.

::

    persona demo                     # the main job on the built-in synthetic shop
    persona train DATA --model als --param factors=32 --weights view=1,add_to_cart=4,purchase=8 --out model.persona
    persona recommend model.persona USER [USER ...] -n 10 [--fallback popular]
    persona evaluate DATA --model popular [--model als ...] [--new-items/--no-new-items] [--lenient]
    persona report --store events.db --out report.html [--since ...] [--categories items.csv]
    persona purge --store events.db --older-than 90d        # retention: delete what is older (cron)
    persona export-user --store events.db --user ann --out ann.json   # a subject-access request
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


# ---------------------------------------------------------------------------------------------- helpers
def _read_data(path: str, args) -> "object":
    """Interactions from a sequences file (.txt), CSV or Parquet, by extension."""
    from .data.interactions import Interactions

    p = Path(path)
    if not p.exists():
        raise SystemExit(f"persona: no data at {path}; pass a sequences .txt, a .csv or a .parquet file")
    cols = dict(user=args.user_col, item=args.item_col, time=args.time_col, event=args.event_col,
                weights=args.weights, strict=args.strict)
    if args.default_weight is not None:
        cols["default_weight"] = args.default_weight
    suffix = p.suffix.lower()
    if suffix in (".txt", ".seq"):
        return Interactions.from_sequences(p)
    if suffix == ".csv":
        return Interactions.from_csv(p, **cols)
    if suffix in (".parquet", ".pq"):
        return Interactions.from_parquet(p, **cols)
    raise SystemExit(f"persona: cannot tell the format of {path} from its extension; use .txt, .csv or .parquet")


def _is_event_log(path: str) -> bool:
    """A CSV/Parquet event log (repeat views and purchases), not a sequences file of distinct items."""
    return Path(path).suffix.lower() not in (".txt", ".seq")


def _value(text: str):
    """A ``--param`` value: JSON where it parses (8, 0.5, true, null, "x", [1,2]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(text: str, what: str, convert) -> dict:
    """``"a=1,b=2"`` -> ``{"a": convert("1"), "b": convert("2")}``, with a clear error on a bad pair."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, val = part.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected name=value, got {part!r}")
        try:
            out[name.strip()] = convert(val.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {name.strip()}={val.strip()!r} is not a number") from None
    return out


def _weights_arg(text: str) -> dict:
    return _pairs(text, "--weights", float)


def _param_arg(text: str) -> tuple:
    name, sep, val = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--param: expected name=value (e.g. factors=32), got {text!r}")
    return name.strip(), _value(val.strip())


def _make(name: str, params) -> "object":
    """The model ``name`` with ``--param`` overrides (a misspelt name is a ParameterError naming the nearest)."""
    from .models.registry import make_model

    return make_model(name, **dict(params or []))


def _add_data_columns(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--user-col", default="user_id", help="user column of a CSV/Parquet file")
    sp.add_argument("--item-col", default="item_id", help="item column of a CSV/Parquet file")
    sp.add_argument("--time-col", default=None, help="timestamp column (optional)")
    sp.add_argument("--event-col", default=None, help="event type column (optional)")
    sp.add_argument("--weights", type=_weights_arg, default=None, metavar="NAME=W,...",
                    help="weight of each event type, over the built-in view=1,click=2,cart=4,purchase=8,search=0.5 "
                         "(e.g. add_to_cart=4); an event type with no weight is a bad row")
    sp.add_argument("--default-weight", type=float, default=None,
                    help="weight of event types that have none (default: they are bad rows)")
    sp.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                    help="--strict (default): stop at the first bad row, naming it; --no-strict: drop bad rows "
                         "and report each reason with its count")
    sp.add_argument("--lenient", dest="strict", action="store_false", help="the same as --no-strict")


def _add_model_params(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--param", type=_param_arg, action="append", default=[], metavar="NAME=VALUE",
                    help="a model hyperparameter, repeatable (e.g. --param factors=32 --param regularization=5); "
                         "values are JSON (numbers, true/false, null) or text")


def _format_table(rows: list[dict], columns: list[str], first: str) -> str:
    """A Markdown table with ``first`` as the row label column."""
    head = "| " + " | ".join([first, *columns]) + " |"
    sep = "|" + "|".join(["---"] * (len(columns) + 1)) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [str(r[first])]
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fit_with_context(name: str, model, train, shop=None):
    """Fit, passing side information the model can use (segments, categories) when we have it."""
    kwargs = {}
    if shop is not None and name == "segment-popular":
        kwargs["user_segments"] = shop.users.set_index("user_id")["segment"]
    if shop is not None and name in ("popular", "trending", "segment-popular"):
        kwargs["item_categories"] = shop.items.set_index("item_id")["category"]
    if shop is not None and name == "content":
        kwargs["item_text"] = shop.items.set_index("item_id")[["name", "category", "brand"]]
    return model.fit(train, **kwargs)


# ---------------------------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from tqdm.auto import tqdm

    from . import split
    from .datasets import synthetic_shop
    from .evaluation import evaluate
    from .models.registry import MODELS, make_model

    t0 = time.perf_counter()
    print(f"persona demo: a synthetic shop with {args.users} users and {args.items} items (seed {args.seed})")
    shop = synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    inter = shop.interactions
    print(f"  {len(inter):,} events ({', '.join(f'{k} {v:,}' for k, v in shop.events['event'].value_counts().items())})"
          f" -> {inter.matrix.nnz:,} user-item pairs; {inter.report}")
    # targets are each user's last newly touched items: repeat views and purchases of an item the
    # user already saw would be unreachable with seen items filtered
    train, valid, test = split.leave_last_out(inter, new_items=True)
    full = train.concat(valid)  # a model sees everything before its test target
    print(f"  leave-last-out split on newly touched items: {len(train):,} train / {len(valid):,} valid / "
          f"{len(test):,} test events ({train.split_info['n_events_dropped']:,} later repeat events dropped)")
    cats = shop.item_categories(inter.item_map)
    # MF predicts explicit ratings (the shop's events are implicit feedback); SASRec and TwoTower
    # need persona-recsys[train] and minutes of training: they run when asked for with --model
    names = args.model or [m for m in MODELS if m not in ("mf", "sasrec", "twotower")]
    rows, fitted = [], {}
    for name in tqdm(names, desc="training and evaluating", unit="model", disable=args.quiet):
        model = make_model(name)
        t = time.perf_counter()
        _fit_with_context(name, model, full, shop)
        fit_s = time.perf_counter() - t
        rep = evaluate(model, test, k=(10,), item_categories=cats)
        fitted[name] = model
        rows.append({"model": name, "hr@10": rep["hr@10"], "ndcg@10": rep["ndcg@10"], "recall@10": rep["recall@10"],
                     "mrr@10": rep["mrr@10"], "coverage@10": rep["coverage@10"], "novelty@10": rep["novelty@10"],
                     "diversity@10": rep["diversity@10"], "fit_s": round(fit_s, 3)})
    cols = ["hr@10", "ndcg@10", "recall@10", "mrr@10", "coverage@10", "novelty@10", "diversity@10", "fit_s"]
    print("\nEvaluation (leave-last-out on new items, full ranking over all items, seen items excluded):\n")
    print(_format_table(rows, cols, "model"))

    best = max(rows, key=lambda r: r["ndcg@10"])["model"]
    model = fitted[best]
    items = shop.items.set_index("item_id")
    rng = np.random.default_rng(args.seed)
    users = rng.choice(inter.user_ids, size=min(3, inter.n_users), replace=False)
    print(f"\nExample recommendations from '{best}':")
    for u in users:
        seq = full.sequence(inter.user_map.index_of(u))[::-1]
        _, first = np.unique(seq, return_index=True)
        hist = inter.item_map.to_ids(seq[np.sort(first)][:3])  # the three most recent distinct items
        seg = shop.users.set_index("user_id").loc[u, "segment"]
        print(f"\n  user {u} ({seg}); recently: " + "; ".join(items.loc[h, "name"] for h in hist))
        rec, sc = model.recommend(u, n=5)
        for r, s in zip(rec, sc):
            it = items.loc[r]
            print(f"    {r}  {it['name']:<38} {it['category']:<14} {it['price']:>8.2f}  score {s:.4f}")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_info(args) -> int:
    from . import __version__
    from .kernels import info

    facts = {"persona": __version__, **info()}
    for k, v in facts.items():
        print(f"{k:>13}: {v}")
    return 0


def cmd_train(args) -> int:
    inter = _read_data(args.data, args)
    print(f"read {inter}; {inter.report}")
    model = _make(args.model, args.param)
    t = time.perf_counter()
    model.fit(inter)
    out = model.save(args.out)
    print(f"fitted {model!r} in {time.perf_counter() - t:.2f} s; saved to {out}")
    return 0


def cmd_recommend(args) -> int:
    from .models import load

    model = load(args.model_path)
    if args.fallback == "popular" and model.fallback_ is None:
        model.set_fallback(_popular_from(model))
    elif args.fallback == "none":
        model.set_fallback(None)
    users = [_maybe_int(u, model.user_map_.ids) for u in args.users]
    ids, scores = model.recommend_batch(users, n=args.n)
    out = {str(u): [{"item": _py(i), "score": float(s)} for i, s in zip(r, sc) if s > -np.inf]
           for u, r, sc in zip(users, ids, scores)}
    print(json.dumps(out, indent=1))
    return 0


def _popular_from(model):
    """A MostPopular over the interactions ``model`` was trained on (its stored seen-item matrix)."""
    from .data.interactions import Interactions
    from .models.popular import MostPopular

    inter = Interactions.from_matrix(model.user_items_, user_ids=model.user_map_.ids, item_ids=model.item_map_.ids)
    return MostPopular().fit(inter)


def cmd_evaluate(args) -> int:
    from . import split
    from .evaluation import evaluate

    inter = _read_data(args.data, args)
    print(f"read {inter}; {inter.report}")
    # on an event log a user's last event is often a repeat (the purchase of a viewed item), which a
    # model filtering seen items can never rank: hold out each user's last *new* item instead
    new_items = _is_event_log(args.data) if args.new_items is None else args.new_items
    train, valid, test = split.leave_last_out(inter, new_items=new_items)
    print(f"leave-last-out split{' on newly touched items' if new_items else ''}: {len(train):,} train / "
          f"{len(valid):,} valid / {len(test):,} test events")
    full = train.concat(valid)
    ks = tuple(args.k)
    rows = []
    for name in args.model or ["popular"]:
        model = _make(name, args.param)
        t = time.perf_counter()
        model.fit(full)
        fit_s = time.perf_counter() - t
        rep = evaluate(model, test, k=ks)
        row = {"model": name, **{f"{m}@{k}": rep[f"{m}@{k}"] for k in ks for m in ("hr", "ndcg")},
               "fit_s": round(fit_s, 3)}
        rows.append(row)
    cols = [c for c in rows[0] if c != "model"]
    print(_format_table(rows, cols, "model"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def cmd_report(args) -> int:
    from .analytics.reports import report
    from .store.events import EventStore

    if "://" not in args.store and not Path(args.store).is_file():
        raise SystemExit(f"persona: no event store at {args.store}; pass the SQLite file (or a postgresql:// URL) "
                         f"the shop's EventStore writes")
    categories = _read_table(args.categories, "--categories", "category") if args.categories else None
    users = _read_table(args.users, "--users", None) if args.users else None
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    by = [b.strip() for b in args.by.split(",") if b.strip()] if args.by else None
    t = time.perf_counter()
    with EventStore(args.store, table=args.table, flush_at_exit=False) as store:
        out = report(store, args.out, title=args.title, since=args.since, until=args.until, steps=steps, by=by,
                     user_features=users, period=args.period, categories=categories, window=args.window,
                     basket=args.basket)
    print(f"wrote {out} in {time.perf_counter() - t:.1f} s")
    return 0


def _open_store(args):
    """The EventStore of ``--store`` (an existing SQLite file or a postgresql:// URL), with ``--key-file``."""
    from .store.events import EventStore

    if "://" not in args.store and not Path(args.store).is_file():
        raise SystemExit(f"persona: no event store at {args.store}; pass the SQLite file (or a postgresql:// URL) "
                         f"the shop's EventStore writes")
    key = None
    if args.key_file:
        try:
            key = Path(args.key_file).read_bytes()
        except OSError as e:
            raise SystemExit(f"persona: cannot read --key-file {args.key_file}: {e.strerror}") from None
    return EventStore(args.store, table=args.table, flush_at_exit=False, pseudonymize_key=key)


def cmd_purge(args) -> int:
    with _open_store(args) as store:
        done = store.purge(args.older_than, before=args.before)
    print(json.dumps({k: done[k] for k in ("events", "impressions", "dead_letters", "before", "seconds")}))
    return 0


def cmd_export_user(args) -> int:
    with _open_store(args) as store:
        data = store.export_user(args.user, path=args.out)
    if args.out:
        print(f"wrote {args.out} (readable by its owner only): {json.dumps(data['counts'])}")
    else:
        print(json.dumps(data, ensure_ascii=False, indent=1))
    return 0


def _read_table(path: str, what: str, needs: str | None):
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"persona: {what}: no file at {path}; pass a CSV or Parquet table")
    df = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    if needs is not None and needs not in df.columns:
        raise SystemExit(f"persona: {what}: {path} has no {needs!r} column (columns: {list(df.columns)})")
    return df


def _maybe_int(u: str, ids: np.ndarray):
    """Command-line ids are strings; use ints when the model's ids are ints."""
    if ids.dtype.kind in "iu":
        try:
            return int(u)
        except ValueError:
            return u
    return u


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    from .models.registry import model_names

    p = argparse.ArgumentParser(prog="persona", description="persona: in-process e-commerce personalisation")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train and evaluate models on the built-in synthetic shop")
    d.add_argument("--users", type=int, default=3000)
    d.add_argument("--items", type=int, default=600)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--model", action="append", choices=model_names(), help="models to run (default all)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="version and the kernel backends in use")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("train", help="fit a model on a data file and save it")
    t.add_argument("data")
    t.add_argument("--model", default="popular", choices=model_names())
    t.add_argument("--out", required=True)
    _add_data_columns(t)
    _add_model_params(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("recommend", help="recommend for users with a saved model (JSON output)")
    r.add_argument("model_path")
    r.add_argument("users", nargs="+")
    r.add_argument("-n", type=int, default=10)
    r.add_argument("--fallback", choices=["saved", "popular", "none"], default="saved",
                   help="how unknown users are answered: the model's saved fallback (default; without one "
                        "they fail the batch), the most popular items of the model's training data, or none")
    r.set_defaults(func=cmd_recommend)

    e = sub.add_parser("evaluate", help="leave-last-out evaluation of models on a data file")
    e.add_argument("data")
    e.add_argument("--model", action="append", choices=model_names())
    e.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    e.add_argument("--json", help="also write the table as JSON here")
    e.add_argument("--new-items", action=argparse.BooleanOptionalAction, default=None,
                   help="hold out each user's last newly touched item (default: on for CSV/Parquet event logs, "
                        "as persona demo does; off for sequences files)")
    _add_data_columns(e)
    _add_model_params(e)
    e.set_defaults(func=cmd_evaluate)

    rp = sub.add_parser("report", help="behaviour analytics of an event store as one self-contained HTML page")
    rp.add_argument("--store", required=True, help="the EventStore: a SQLite file or a postgresql:// URL")
    rp.add_argument("--table", default="persona_events", help="the store's table (default persona_events)")
    rp.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    rp.add_argument("--title", default="Shop behaviour report")
    rp.add_argument("--since", default=None, help="only events at or after this time (ISO-8601)")
    rp.add_argument("--until", default=None, help="only events before this time (ISO-8601)")
    rp.add_argument("--steps", default="view,cart,purchase", help="the funnel's event types, in order")
    rp.add_argument("--by", default=None, help="funnel groups: event columns / properties, day|week|month, or "
                                               "columns of --users, comma-separated")
    rp.add_argument("--users", default=None, help="a CSV/Parquet table of users (user_id and attribute columns)")
    rp.add_argument("--categories", default=None, help="a CSV/Parquet catalogue with item_id and category columns")
    rp.add_argument("--period", default="week", choices=["day", "week", "month"], help="the cohorts' period")
    rp.add_argument("--window", default="7D", help="the trends' recent window (e.g. 7D, 24h)")
    rp.add_argument("--basket", default="user", help="what makes a basket: user, day|week|month, or a property")
    rp.set_defaults(func=cmd_report)

    pu = sub.add_parser("purge", help="delete the events and impressions of an event store older than a window")
    _add_store_args(pu)
    pu.add_argument("--older-than", default=None,
                    help="the window to keep: 90d, 36h, 2w, or a number of days (default: none; give this or --before)")
    pu.add_argument("--before", default=None, help="delete what is older than this time instead (ISO-8601)")
    pu.set_defaults(func=cmd_purge)

    ex = sub.add_parser("export-user", help="everything an event store holds about one user, as JSON")
    _add_store_args(ex)
    ex.add_argument("--user", required=True, help="the user's id, as the shop tracks it")
    ex.add_argument("--out", default=None, help="write the JSON here (mode 0600) instead of printing it")
    ex.set_defaults(func=cmd_export_user)
    return p


def _add_store_args(sp) -> None:
    sp.add_argument("--store", required=True, help="the EventStore: a SQLite file or a postgresql:// URL")
    sp.add_argument("--table", default="persona_events", help="the store's table (default persona_events)")
    sp.add_argument("--key-file", default=None,
                    help="a file holding the store's pseudonymize_key (its raw bytes), for a pseudonymised store")


def main(argv=None) -> int:
    from .errors import PersonaError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except PersonaError as e:
        print(f"persona: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

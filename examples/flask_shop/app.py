"""A tiny shop on Flask with persona: product pages that record views and cart events, and show
"recommended for you" and "customers also bought".

Run it (see README.md)::

    cd examples/flask_shop
    flask --app app run                 # http://127.0.0.1:5000
    flask --app app persona train       # retrain on every event so far; the running shop reloads it

On first start it puts the synthetic shop's past events into an event store (``data/events.db``)
and trains an item-to-item model on them (``data/model.persona``).

Closing the loop: every list the shop shows is logged as an impression (request id, visitor,
placement "home" / "pdp" / "pdp-similar", items and positions, model version) in the event store,
and its links carry the request id (``?persona_rid=...``); the product page records a click
attributed to that list (``persona.track_click``). ``/metrics`` shows impressions, clicks, CTR and
the rest per placement (``ps.analytics.online_metrics``).

Who is who: a visitor gets an id in the session cookie. "Recommended for you" is computed from the
visitor's cart and the *other* products they looked at in this session (the product on screen
already has its own "customers also bought" list), so the first product page a new visitor opens
shows what is popular, and adding that product to the cart turns the list into recommendations
made from it -- at once, with no retraining: the service answers unknown visitors from their
session history. Signing in as a sample customer shows what the trained model learnt about them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from flask import Flask, abort, redirect, render_template, request, session, url_for

import persona as ps
from persona.contrib.common import build_service, parse_request_id, train_and_publish
from persona.contrib.flask import Persona
from persona.store import EventStore

HERE = Path(__file__).resolve().parent
N_RECS = 6
TRAIN = {"model": "itemknn", "params": {"k": 50}}


def seed_store(store: EventStore, shop) -> int:
    """Put the synthetic shop's past events into ``store`` (fixed event ids: running it twice stores them once)."""
    ev = shop.events
    for i, (user, item, ts, event, value) in enumerate(zip(ev["user_id"], ev["item_id"], ev["timestamp"],
                                                           ev["event"].astype(str), ev["value"])):
        store.track(user, item, event, timestamp=ts.timestamp(), value=None if value != value else float(value),
                    event_id=f"seed-{i}")
    store.flush()
    return len(ev)


def create_app(data_dir=None, *, n_users: int = 400, n_items: int = 300, seed: int = 7, watch: bool = True,
               secret_key: str | None = None) -> Flask:
    data = Path(data_dir or os.environ.get("FLASK_SHOP_DATA") or HERE / "data")
    data.mkdir(parents=True, exist_ok=True)
    shop = ps.datasets.synthetic_shop(n_users=n_users, n_items=n_items, seed=seed)
    catalog = shop.items[["item_id", "name", "category", "brand", "price"]]
    products = {row["item_id"]: row for row in catalog.to_dict("records")}

    store = EventStore(data / "events.db")
    if store.count() == 0:
        seed_store(store, shop)
    model_path = data / "model.persona"
    if not model_path.exists():
        train_and_publish(store, model_path, **TRAIN)
    service = build_service(model_path, store=store, catalog=catalog, watch=watch)
    service.set_stock(list(products)[::17], available=False)  # a few sold-out products: never recommended

    app = Flask(__name__, root_path=str(HERE))
    app.secret_key = secret_key or os.environ.get("FLASK_SHOP_SECRET") or "dev-only-not-a-secret"

    def visitor() -> str:
        """Who the shop says this browser is: kept in Flask's signed session, so it cannot be forged."""
        if "visitor" not in session:
            session["visitor"] = f"visitor-{uuid.uuid4().hex}"
        return session["visitor"]

    # JSON endpoints under /persona for the current visitor only (recommendations, similar items, events;
    # /persona/stats stays off without stats_permission=) and `flask --app app persona train`
    persona = Persona(app, service=service, store=store, model_path=model_path, current_user=visitor,
                      train_options=TRAIN)
    app.extensions["shop"] = {"shop": shop, "products": products, "store": store, "service": service}

    def cards(recs) -> list[dict]:
        return [products[i] for i in recs.items.tolist() if i in products]

    def for_you(current=None, shown=(), placement="home"):
        """Recommendations from the visitor's cart and the other products they viewed.

        Left out: sold-out products, the cart, the product on screen and what the page already shows.
        Logged as an impression at ``placement``; the cards' links carry its request id.
        """
        cart = session.get("cart", [])
        viewed = [i for i in session.get("viewed", []) if i != current]
        history = list(dict.fromkeys([*viewed, *cart]))
        exclude = list(dict.fromkeys([*cart, *([current] if current else []), *shown]))
        return persona.recommend(visitor(), N_RECS, history=history or None, exclude=exclude or None, in_stock=True,
                                 placement=placement)

    @app.get("/")
    def home():
        category = request.args.get("category")
        listed = [p for p in products.values() if category in (None, "", p["category"])]
        categories = sorted({p["category"] for p in products.values()})
        samples = shop.interactions.user_ids[:3].tolist()
        recs = for_you()
        return render_template("home.html", products=listed, categories=categories, category=category,
                               recommended=cards(recs), recs=recs, samples=samples, user=visitor(),
                               cart=session.get("cart", []))

    @app.get("/product/<item_id>")
    def product(item_id):
        item = products.get(item_id)
        if item is None:
            abort(404)
        if not request.args.get("added"):  # coming back from "add to cart" is not a second view
            persona.track(visitor(), item_id, "view")
            session["viewed"] = [*[i for i in session.get("viewed", []) if i != item_id], item_id][-20:]
        persona.track_click(visitor(), item_id)  # opened from a recommendation: ?persona_rid= names the list
        also = persona.similar_items(item_id, N_RECS, user=visitor(), exclude=session.get("cart") or None,
                                     in_stock=True, placement="pdp-similar")
        recs = for_you(current=item_id, shown=also.items.tolist(), placement="pdp")
        return render_template("product.html", item=item, recommended=cards(recs), recs=recs,
                               also_bought=cards(also), also=also, added=bool(request.args.get("added")),
                               user=visitor(), cart=session.get("cart", []))

    @app.post("/cart")
    def add_to_cart():
        item_id = request.form.get("item_id", "")
        item = products.get(item_id)
        if item is None:
            abort(400)
        # the cart event carries the list it was added from, so it is attributed to it too
        rid = request.form.get("persona_rid") or None
        props = {"request_id": rid} if parse_request_id(rid) else None
        persona.track(visitor(), item_id, "cart", value=float(item["price"]), properties=props)
        session["cart"] = [*[i for i in session.get("cart", []) if i != item_id], item_id]
        return redirect(url_for("product", item_id=item_id, added=1))

    @app.get("/metrics")
    def metrics():
        """What the shown lists did, per placement (a demo page: a real shop keeps it for staff)."""
        store.flush()
        table = ps.analytics.online_metrics(store, by="placement", catalog=len(products))
        cols = ["impressions", "requests", "clicks", "ctr", "ctr_low", "ctr_high", "carts", "cart_rate",
                "coverage", "novelty"]
        rows = [{"placement": p, **{c: table.loc[p, c] for c in cols}} for p in table.index]
        return render_template("metrics.html", rows=rows, cols=cols, unattributed=table.attrs["unattributed"],
                               user=visitor(), cart=session.get("cart", []))

    @app.get("/login/<user_id>")
    def login(user_id):
        session.clear()
        session["visitor"] = user_id  # a demo sign-in as one of the sample customers (a real shop checks a password)
        return redirect(url_for("home"))

    @app.get("/logout")
    def logout():
        session.clear()
        return redirect(url_for("home"))

    return app


if __name__ == "__main__":
    create_app().run(debug=False)

"""A seeded synthetic shop: users, a catalogue and their browsing sessions.

:func:`synthetic_shop` writes the kind of event log a real shop produces, from a generative model
with known structure, so that demos, tests and benchmarks have data that behaves like the real
thing without shipping any:

* **catalogue** -- items belong to a category and a brand; price follows the category's base
  price, the brand's tier and some noise; item popularity is Zipf-like (a few items get most of
  the traffic); every item has a latent taste vector built from its category, its brand and its
  own noise.
* **customers** -- each user belongs to a segment (students, parents, ...) that sets the likely
  age, gender mix, spending level and a category profile; gender and age shift the category
  profile further; each user then draws a Dirichlet mixture over categories and a latent taste
  vector near the segment's centre, and a preferred price level from the spending level.
* **sessions** -- users have a Poisson number of sessions (heavy-tailed activity) spread over
  ``days`` with weekly and daily rhythms. A session focuses on one category drawn from the user's
  mixture, with a few detours; the user looks at candidates proposed by popularity and views them
  with probability rising with their personal utility (taste match and price fit), views some
  again, clicks into some (reviews, photos), carts fewer and buys fewer still. Returning users
  often come back to the best item of their previous session.

Because tastes drive the choices, a personalised model clearly beats global popularity on this
data, and popularity within a demographic segment beats global popularity a little; the tests
check both.

Examples
--------
>>> from persona.datasets import synthetic_shop
>>> shop = synthetic_shop(n_users=200, n_items=100, seed=1)
>>> sorted(shop.events["event"].unique())
['cart', 'click', 'purchase', 'view']
>>> shop.items.columns.tolist()
['item_id', 'name', 'category', 'brand', 'price', 'tags']
>>> shop.users.columns.tolist()
['user_id', 'age', 'gender', 'location', 'spending_level', 'segment']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .._validate import check_int
from ..errors import DataError

__all__ = ["Shop", "synthetic_shop", "EVENT_TYPES", "SEGMENTS"]

EVENT_TYPES = ("view", "click", "cart", "purchase")

#: The first day of every synthetic shop (a Monday, UTC); events fall in ``[start, start + days)``.
START = "2024-01-01"
_START_SECONDS = 1704067200  # START as epoch seconds

if TYPE_CHECKING:  # pandas is imported only when a shop is made: ``import persona`` stays light
    import pandas as pd

_LATENT_DIM = 16
_POOL = 24  # candidates a session looks at; views are drawn from them

# name, share, age mean, age sd, share of women, P(spending low / medium / high), activity factor
SEGMENTS = (
    ("students", 0.15, 21.0, 2.5, 0.55, (0.60, 0.35, 0.05), 0.9),
    ("young_professionals", 0.22, 29.0, 4.0, 0.55, (0.20, 0.50, 0.30), 1.1),
    ("parents", 0.20, 38.0, 6.0, 0.65, (0.35, 0.50, 0.15), 1.0),
    ("enthusiasts", 0.13, 33.0, 9.0, 0.75, (0.15, 0.45, 0.40), 1.6),
    ("mainstream", 0.20, 47.0, 11.0, 0.50, (0.35, 0.50, 0.15), 0.8),
    ("seniors", 0.10, 67.0, 6.0, 0.60, (0.30, 0.45, 0.25), 0.8),
)
_SPENDING = ("low", "medium", "high")
_GENDERS = ("F", "M", "X")

_CATEGORIES = (
    ("Skincare", ("Face Serum", "Moisturiser", "Cleanser", "Toner", "Eye Cream", "Face Mask", "Night Cream")),
    ("Makeup", ("Lipstick", "Mascara", "Foundation", "Eyeliner", "Blush", "Concealer", "Eyeshadow Palette")),
    ("Haircare", ("Shampoo", "Conditioner", "Hair Oil", "Hair Mask", "Styling Gel", "Dry Shampoo")),
    ("Fragrance", ("Eau de Parfum", "Eau de Toilette", "Body Mist", "Perfume Oil", "Cologne")),
    ("Bath & Body", ("Body Lotion", "Shower Gel", "Body Scrub", "Bath Salts", "Hand Cream", "Body Oil")),
    ("Nails", ("Nail Polish", "Top Coat", "Cuticle Oil", "Nail File", "Base Coat")),
    ("Men's Grooming", ("Beard Oil", "Shaving Foam", "Aftershave Balm", "Razor", "Beard Trimmer")),
    ("Wellness", ("Herbal Tea", "Vitamin Gummies", "Sleep Spray", "Massage Oil", "Protein Bar")),
    ("Tools & Brushes", ("Makeup Brush Set", "Hair Dryer", "Straightener", "Jade Roller", "Sponge")),
    ("Sun Care", ("Sunscreen", "After-Sun Gel", "Self Tanner", "SPF Lip Balm", "Tinted Sunscreen")),
    ("Oral Care", ("Toothpaste", "Electric Toothbrush", "Mouthwash", "Whitening Strips", "Floss")),
    ("Baby & Kids", ("Baby Lotion", "Kids Shampoo", "Nappy Cream", "Baby Wipes", "Bubble Bath")),
    ("Home Fragrance", ("Scented Candle", "Reed Diffuser", "Room Spray", "Wax Melts")),
    ("Accessories", ("Hair Clip", "Makeup Bag", "Headband", "Silk Scrunchie", "Travel Pouch")),
    ("Supplements", ("Collagen Powder", "Omega-3 Capsules", "Biotin Tablets", "Multivitamin")),
    ("Fitness", ("Yoga Mat", "Resistance Band", "Water Bottle", "Foam Roller", "Sports Towel")),
)
_ADJECTIVES = (
    "Rose", "Velvet", "Hydra", "Pure", "Silk", "Glow", "Matte", "Ocean", "Citrus", "Amber", "Daily",
    "Intense", "Gentle", "Radiant", "Fresh", "Classic", "Midnight", "Golden", "Aqua", "Botanical",
    "Vanilla", "Cedar", "Lavender", "Bamboo", "Coconut", "Charcoal", "Vitamin C", "Peony", "Arctic",
    "Sensitive",
)
_BRAND_STEMS = (
    "Acme", "Aurora", "Bloom", "Cedar", "Dune", "Ember", "Fjord", "Halo", "Iris", "Juniper", "Kora",
    "Luna", "Maple", "Nova", "Opal", "Pearl", "Quill", "Rosa", "Sage", "Terra", "Umbra", "Verde",
    "Willow", "Zephyr", "Lumen",
)
_BRAND_SUFFIXES = ("", " Labs", " & Co", " Naturals", " Studio", " Botanics", " Paris", " Beauty")
_TAGS = (
    "vegan", "organic", "cruelty-free", "travel size", "gift set", "limited edition", "refillable",
    "fragrance-free", "dermatologist tested", "new",
)
_CITIES = (
    "Berlin", "Paris", "Madrid", "Rome", "Amsterdam", "Vienna", "Warsaw", "Lisbon", "Prague",
    "Stockholm", "Dublin", "Copenhagen", "Brussels", "Athens", "Helsinki",
)
# relative traffic by weekday (Monday first) and by hour of day
_WEEKDAY = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25])
_HOURLY = np.array([
    0.3, 0.15, 0.1, 0.08, 0.08, 0.15, 0.35, 0.6, 0.8, 0.9, 0.95, 1.0,
    1.1, 1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.5, 1.6, 1.5, 1.1, 0.6,
])


@dataclass(repr=False, eq=False)
class Shop:
    """A synthetic shop: its event log, catalogue and customers.

    Attributes
    ----------
    events : pandas.DataFrame
        One row per event, in time order: ``user_id`` (str), ``item_id`` (str), ``timestamp``
        (datetime64, UTC), ``event`` (categorical: ``view``, ``click``, ``cart``, ``purchase``), ``value`` (the
        price paid for purchases, NaN otherwise) and ``session_id`` (int).
    items : pandas.DataFrame
        ``item_id``, ``name``, ``category``, ``brand``, ``price``, ``tags`` (a list of str).
    users : pandas.DataFrame
        ``user_id``, ``age``, ``gender``, ``location``, ``spending_level``, ``segment``.
    category_names : tuple of str
        The categories; :meth:`item_categories` returns indices into it.
    seed, days : int
        How the shop was generated.
    """

    events: "pd.DataFrame"
    items: "pd.DataFrame"
    users: "pd.DataFrame"
    category_names: tuple = ()
    seed: int = 0
    days: int = 90
    _interactions: object = field(default=None, init=False, compare=False)

    def __repr__(self) -> str:
        counts = self.events["event"].value_counts()
        funnel = ", ".join(f"{int(counts.get(e, 0))} {e}" for e in EVENT_TYPES)
        return (
            f"Shop({len(self.users)} users, {len(self.items)} items, {len(self.events)} events over "
            f"{self.days} days: {funnel}; seed={self.seed})"
        )

    @property
    def start(self) -> "pd.Timestamp":
        """The first instant of the shop's history."""
        import pandas as pd

        return pd.Timestamp(START, tz="UTC")

    @property
    def interactions(self):
        """The events as :class:`~persona.data.Interactions` with the default event weights (cached)."""
        if self._interactions is None:
            self._interactions = self.to_interactions()
        return self._interactions

    def to_interactions(self, **options):
        """Build :class:`~persona.data.Interactions` from :attr:`events`.

        Parameters
        ----------
        **options
            Passed to :func:`persona.data.ingest.from_frame` (e.g. ``weights={"view": 1, ...}``).
        """
        from ..data.ingest import from_frame

        return from_frame(self.events, user="user_id", item="item_id", time="timestamp", event="event", **options)

    def item_categories(self, item_map=None) -> np.ndarray:
        """Category index of every item of ``item_map`` (indices into :attr:`category_names`).

        Parameters
        ----------
        item_map : IdMap, Interactions, array of item ids, optional
            The items to describe, in order; by default the item map of :attr:`interactions`.

        Returns
        -------
        np.ndarray of int64
            One code per item, ``-1`` for ids the shop does not know.
        """
        import pandas as pd

        from ..data.idmap import IdMap

        if item_map is None:
            item_map = self.interactions.item_map
        if hasattr(item_map, "item_map"):
            item_map = item_map.item_map
        ids = item_map.ids if isinstance(item_map, IdMap) else np.asarray(item_map)
        catalogue = IdMap(self.items["item_id"].to_numpy(dtype=str))
        codes = pd.Categorical(self.items["category"], categories=list(self.category_names)).codes
        pos = catalogue.lookup(ids)
        out = np.full(len(pos), -1, dtype=np.int64)
        out[pos >= 0] = codes[pos[pos >= 0]]
        return out


# ---------------------------------------------------------------------------------------------- helpers
def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    width = max(width, len(str(max(n - 1, 0))))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _draw_rows(cum: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of ``rows``, draw a column from that row's cumulative distribution.

    ``cum`` holds one normalised cumulative distribution per row (last column exactly 1). Rows
    are laid end to end, row ``r`` spanning ``(r, r + 1]``, so one ``searchsorted`` draws all.
    """
    n_rows, n_cols = cum.shape
    flat = (cum + np.arange(n_rows)[:, None]).ravel()
    x = rows + rng.random(len(rows))
    idx = np.searchsorted(flat, x, side="right")
    return np.minimum(idx - rows * n_cols, n_cols - 1)


def _normalised_cumsum(p: np.ndarray) -> np.ndarray:
    cum = np.cumsum(p, axis=-1)
    cum /= cum[..., -1:]
    cum[..., -1] = 1.0
    return cum


def _segmented_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarting at every segment of length ``counts``."""
    total = np.cumsum(values)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    before = np.concatenate([[0.0], total])[starts]
    return total - np.repeat(before, counts)


class _GroupSampler:
    """Draw items of a given group with probability proportional to a weight, O(1) per draw.

    Walker's alias method per group: a draw picks a uniform slot of its group and keeps it or
    takes the slot's alias. No search, no sort, so millions of draws cost a few array passes.
    """

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group, minlength=n_groups)
        self.offset = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts
        self.items = order
        self.keep = np.ones(len(order))
        self.alias = np.arange(len(order))
        w = weight[order]
        for g in range(n_groups):
            lo, n = self.offset[g], counts[g]
            if n == 0:
                continue
            q = w[lo : lo + n] * (n / w[lo : lo + n].sum())
            small = [i for i in range(n) if q[i] < 1.0]
            large = [i for i in range(n) if q[i] >= 1.0]
            while small and large:
                s, l_ = small.pop(), large[-1]
                self.keep[lo + s] = q[s]
                self.alias[lo + s] = lo + l_
                q[l_] -= 1.0 - q[s]
                if q[l_] < 1.0:
                    small.append(large.pop())
            # whatever is left is 1 up to rounding: always kept

    def draw(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        slot = self.offset[group] + (rng.random(len(group)) * self.counts[group]).astype(np.int64)
        slot = np.minimum(slot, self.offset[group] + self.counts[group] - 1)
        slot = np.where(rng.random(len(group)) < self.keep[slot], slot, self.alias[slot])
        return self.items[slot]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------- generator
def synthetic_shop(
    n_users: int = 2000,
    n_items: int = 500,
    *,
    n_categories: int = 12,
    n_brands: int = 40,
    days: int = 90,
    seed: int = 0,
) -> Shop:
    """Generate a seeded synthetic shop: catalogue, customers and ``days`` of browsing sessions.

    Parameters
    ----------
    n_users, n_items : int
        Size of the customer base and of the catalogue. Every user has at least one session.
    n_categories : int
        Number of product categories (at most ``n_items``); the first 16 have real names.
    n_brands : int
        Number of brands.
    days : int
        Length of the history; every timestamp lies in ``[shop.start, shop.start + days)``.
    seed : int
        The same seed gives identical frames.

    Returns
    -------
    Shop

    Examples
    --------
    >>> shop = synthetic_shop(n_users=300, n_items=80, seed=3)
    >>> len(shop.users), len(shop.items)
    (300, 80)
    >>> import pandas as pd
    >>> bool((shop.events["timestamp"] < shop.start + pd.Timedelta(days=90)).all())
    True
    """
    n_users = check_int(n_users, "n_users", min=1, error=DataError)
    n_items = check_int(n_items, "n_items", min=1, error=DataError)
    n_categories = check_int(n_categories, "n_categories", min=1, error=DataError)
    n_brands = check_int(n_brands, "n_brands", min=1, error=DataError)
    days = check_int(days, "days", min=1, error=DataError)
    if n_categories > n_items:
        raise DataError(f"n_categories ({n_categories}) must not exceed n_items ({n_items}); lower n_categories")
    rng = np.random.default_rng(check_int(seed, "seed", error=DataError))
    items, item_arrays, category_names = _make_items(rng, n_items, n_categories, n_brands)
    users, user_arrays = _make_users(rng, n_users, n_categories)
    events = _make_events(rng, item_arrays, user_arrays, days, items["item_id"].to_numpy(),
                          users["user_id"].to_numpy())
    return Shop(events=events, items=items, users=users, category_names=category_names, seed=int(seed), days=days)


def _make_items(rng, n_items, n_categories, n_brands):
    import pandas as pd

    C, B, d = n_categories, n_brands, _LATENT_DIM
    category_names = tuple(
        _CATEGORIES[c][0] if c < len(_CATEGORIES) else f"Category {c + 1}" for c in range(C)
    )
    nouns = [(_CATEGORIES[c][1] if c < len(_CATEGORIES) else ("Item", "Product", "Set", "Kit")) for c in range(C)]

    cat_share = rng.dirichlet(np.full(C, 4.0))
    item_cat = np.concatenate([np.arange(C), rng.choice(C, n_items - C, p=cat_share)])
    item_cat = item_cat[rng.permutation(n_items)]

    # brands: Zipf-like reach, a home category and a few others, a price tier
    brand_pop = (rng.permutation(B) + 1.0) ** -0.8
    brand_cats = np.zeros((B, C), dtype=bool)
    brand_cats[np.arange(B), rng.choice(C, B, p=cat_share)] = True
    brand_cats |= rng.random((B, C)) < 0.12
    orphan = ~brand_cats.any(axis=0)
    brand_cats[rng.integers(0, B, orphan.sum()), np.flatnonzero(orphan)] = True
    brand_tier = rng.normal(0.0, 0.45, B)
    cat_brand_cum = _normalised_cumsum(brand_pop[None, :] * brand_cats.T)  # C x B
    item_brand = _draw_rows(cat_brand_cum, item_cat, rng)

    cat_price = np.exp(rng.normal(np.log(18.0), 0.6, C))
    price = cat_price[item_cat] * np.exp(brand_tier[item_brand] + rng.normal(0.0, 0.3, n_items))
    price = np.maximum(np.round(price) - 0.01, 0.99)
    logp = np.log(price)
    cat_mean = np.bincount(item_cat, logp, C) / np.bincount(item_cat, minlength=C)
    rel_price = logp - cat_mean[item_cat]
    rel_price /= max(rel_price.std(), 1e-6)

    # popularity: Zipf over a random ranking, nudged by the brand's reach
    rank = rng.permutation(n_items) + 1.0
    log_pop = -0.9 * np.log(rank) + 0.3 * np.log(brand_pop[item_brand])

    cat_vec = rng.normal(0.0, 1.0, (C, d))
    brand_vec = rng.normal(0.0, 1.0, (B, d))
    item_vec = 0.5 * cat_vec[item_cat] + 0.6 * brand_vec[item_brand] + 0.7 * rng.normal(0.0, 1.0, (n_items, d))
    item_vec /= np.linalg.norm(item_vec, axis=1, keepdims=True)

    n_stem, n_names = len(_BRAND_STEMS), len(_BRAND_STEMS) * len(_BRAND_SUFFIXES)
    brand_names = np.array([
        _BRAND_STEMS[b % n_stem]
        + _BRAND_SUFFIXES[(b // n_stem) % len(_BRAND_SUFFIXES)]
        + ("" if b < n_names else f" {b // n_names + 1}")
        for b in range(B)
    ], dtype=object)
    adj = rng.integers(0, len(_ADJECTIVES), n_items)
    noun_pick = rng.integers(0, 1 << 30, n_items)
    names = [
        f"{brand_names[b]} {_ADJECTIVES[a]} {nouns[c][k % len(nouns[c])]}"
        for b, a, c, k in zip(item_brand.tolist(), adj.tolist(), item_cat.tolist(), noun_pick.tolist())
    ]
    extra = rng.random((n_items, len(_TAGS))) < 0.06
    best = rank <= max(1, int(0.05 * n_items))
    tags = []
    for i in range(n_items):
        t = [_TAGS[j] for j in np.flatnonzero(extra[i])]
        if rel_price[i] < -0.8:
            t.append("budget")
        elif rel_price[i] > 0.8:
            t.append("premium")
        if best[i]:
            t.append("bestseller")
        tags.append(t)

    items = pd.DataFrame({
        "item_id": _ids("i", n_items, 4),
        "name": np.array(names, dtype=object),
        "category": np.array(category_names, dtype=object)[item_cat],
        "brand": brand_names[item_brand],
        "price": price,
        "tags": pd.Series(tags, dtype=object),
    })
    sampler = _GroupSampler(item_cat, np.exp(log_pop - log_pop.max()), C)
    arrays = dict(cat=item_cat, vec=item_vec.astype(np.float32), sampler=sampler, rel_price=rel_price, price=price,
                  n_categories=C)
    return items, arrays, category_names


def _make_users(rng, n_users, C):
    import pandas as pd

    S, d = len(SEGMENTS), _LATENT_DIM
    share = np.array([s[1] for s in SEGMENTS])
    seg = rng.choice(S, n_users, p=share / share.sum())
    age_mu = np.array([s[2] for s in SEGMENTS])
    age_sd = np.array([s[3] for s in SEGMENTS])
    age = np.clip(np.round(rng.normal(age_mu[seg], age_sd[seg])), 16, 90).astype(np.int64)
    women = np.array([s[4] for s in SEGMENTS])
    gender = np.where(rng.random(n_users) < women[seg], 0, 1)
    gender[rng.random(n_users) < 0.02] = 2
    spend_p = np.array([s[5] for s in SEGMENTS])
    spending = _draw_rows(_normalised_cumsum(spend_p), seg, rng)
    city_w = (np.arange(len(_CITIES)) + 1.0) ** -0.7
    location = rng.choice(len(_CITIES), n_users, p=city_w / city_w.sum())

    # category tastes: segment profile x gender shift x age trend, then a personal Dirichlet draw
    global_share = rng.dirichlet(np.full(C, 3.0))
    seg_profile = 0.5 * global_share + 0.5 * rng.dirichlet(np.full(C, 0.7), size=S)
    gender_mult = np.exp(rng.normal(0.0, 0.5, (3, C)))
    age_slope = rng.normal(0.0, 0.5, C)
    age_z = (age - 40.0) / 15.0
    pref = seg_profile[seg] * gender_mult[gender] * np.exp(age_slope[None, :] * age_z[:, None])
    pref /= pref.sum(axis=1, keepdims=True)
    theta = rng.gamma(2.0 * pref)
    theta /= np.maximum(theta.sum(axis=1, keepdims=True), 1e-300)
    theta = 0.95 * theta + 0.05 * pref  # nobody is entirely blind to a category

    seg_vec = rng.normal(0.0, 1.0, (S, d))
    taste = 0.5 * seg_vec[seg] + 1.0 * rng.normal(0.0, 1.0, (n_users, d))
    price_pref = np.array([-0.7, 0.0, 0.7])[spending] + rng.normal(0.0, 0.3, n_users)
    activity = np.array([s[6] for s in SEGMENTS])[seg] * np.exp(rng.normal(np.log(4.0), 0.8, n_users))

    users = pd.DataFrame({
        "user_id": _ids("u", n_users, 5),
        "age": age,
        "gender": np.array(_GENDERS, dtype=object)[gender],
        "location": np.array(_CITIES, dtype=object)[location],
        "spending_level": np.array(_SPENDING, dtype=object)[spending],
        "segment": np.array([s[0] for s in SEGMENTS], dtype=object)[seg],
    })
    arrays = dict(theta=theta, taste=taste, price_pref=price_pref, spending=spending, activity=activity)
    return users, arrays


def _make_events(rng, it, us, days, item_ids, user_ids):
    import pandas as pd

    n_items = len(it["cat"])
    K = _POOL

    # ---- sessions: how many, when (weekly and daily rhythm, slow growth), in time order per user
    n_sess = 1 + rng.poisson(us["activity"])
    sess_user = np.repeat(np.arange(len(n_sess)), n_sess)
    n_s = len(sess_user)
    day_w = _WEEKDAY[np.arange(days) % 7] * (1.0 + 0.3 * np.arange(days) / days)
    day = rng.choice(days, n_s, p=day_w / day_w.sum())
    hour = rng.choice(24, n_s, p=_HOURLY / _HOURLY.sum())
    start = day * 86400.0 + (hour + rng.random(n_s)) * 3600.0
    start = start[np.lexsort((start, sess_user))]

    # ---- candidates: a focus category, detours, popularity-proposed items, a little noise
    theta_cum = _normalised_cumsum(us["theta"])
    focus = _draw_rows(theta_cum, sess_user, rng)
    cand_user = np.repeat(sess_user, K)
    cand_cat = np.repeat(focus, K)
    detour = rng.random(n_s * K) < 0.3
    cand_cat[detour] = _draw_rows(theta_cum, cand_user[detour], rng)
    cand = it["sampler"].draw(cand_cat, rng)
    noise = rng.random(len(cand)) < 0.04
    cand[noise] = rng.integers(0, n_items, noise.sum())
    cand = cand.reshape(n_s, K)

    # ---- personal utility of every candidate: taste match and price fit
    util = np.empty((n_s, K))
    step = max(1, 2_000_000 // (K * _LATENT_DIM))
    for lo in range(0, n_s, step):
        hi = min(n_s, lo + step)
        c = cand[lo:hi]
        u = sess_user[lo:hi]
        taste = np.einsum("skd,sd->sk", it["vec"][c], us["taste"][u])
        fit = (it["rel_price"][c] - us["price_pref"][u][:, None]) ** 2
        util[lo:hi] = taste - 0.35 * fit
    util = (util - util.mean()) / max(util.std(), 1e-9)

    # ---- views: drawn from the pool by softmax of utility, with repeats
    n_views = np.minimum(1 + rng.poisson(3.5, n_s), 30)
    w = np.exp(1.6 * (util - util.max(axis=1, keepdims=True)))
    view_sess = np.repeat(np.arange(n_s), n_views)
    slot = _draw_rows(_normalised_cumsum(w), view_sess, rng)
    view_item = cand[view_sess, slot]
    view_util = util[view_sess, slot]
    # a returning user often opens the session with the best item of the previous one
    best = np.argmax(util, axis=1)
    back = np.flatnonzero((np.r_[False, sess_user[1:] == sess_user[:-1]]) & (rng.random(n_s) < 0.35))
    view_sess = np.concatenate([back, view_sess])
    view_item = np.concatenate([cand[back - 1, best[back - 1]], view_item])
    view_util = np.concatenate([util[back - 1, best[back - 1]], view_util])
    o = np.argsort(view_sess, kind="stable")
    view_sess, view_item, view_util = view_sess[o], view_item[o], view_util[o]
    per_sess = np.bincount(view_sess, minlength=n_s)

    # times: seconds between views inside a session
    gaps = np.clip(rng.exponential(50.0, len(view_sess)), 3.0, 600.0)
    offset = _segmented_cumsum(gaps, per_sess) - gaps  # first view at the session start
    duration = offset[np.cumsum(per_sess) - 1] + 900.0  # room for clicks, carts and the checkout
    horizon = days * 86400.0
    start = np.maximum(np.minimum(start, horizon - duration - 1.0), 0.0)
    view_t = start[view_sess] + offset

    # ---- funnel: click (details, reviews) > cart > purchase, all rising with utility
    user_of_view = sess_user[view_sess]
    clicked = rng.random(len(view_item)) < _sigmoid(-1.6 + 0.8 * view_util)
    click_t = view_t + rng.uniform(2.0, 30.0, len(view_t))
    carted = clicked & (rng.random(len(view_item)) < _sigmoid(-1.3 + 0.8 * view_util))
    cart_t = click_t + rng.uniform(5.0, 60.0, len(view_t))
    thrift = np.array([0.6, 0.0, -0.3])[us["spending"][user_of_view]]
    buy_p = _sigmoid(-0.5 + 0.6 * view_util - thrift * np.maximum(it["rel_price"][view_item], 0.0))
    bought = carted & (rng.random(len(view_item)) < buy_p)
    # one purchase per item and session, at checkout after the last view
    key = view_sess.astype(np.int64) * n_items + view_item
    b_idx = np.flatnonzero(bought)
    _, first = np.unique(key[b_idx], return_index=True)
    b_idx = b_idx[np.sort(first)]
    last_view = start + duration - 900.0
    buy_t = last_view[view_sess[b_idx]] + rng.uniform(120.0, 600.0, len(b_idx))

    c_idx, k_idx = np.flatnonzero(clicked), np.flatnonzero(carted)
    sess = np.concatenate([view_sess, view_sess[c_idx], view_sess[k_idx], view_sess[b_idx]])
    item = np.concatenate([view_item, view_item[c_idx], view_item[k_idx], view_item[b_idx]])
    t = np.concatenate([view_t, click_t[c_idx], cart_t[k_idx], buy_t])
    kind = np.concatenate([
        np.zeros(len(view_item), np.int8), np.full(len(c_idx), 1, np.int8),
        np.full(len(k_idx), 2, np.int8), np.full(len(b_idx), 3, np.int8),
    ])
    value = np.full(len(item), np.nan)
    value[kind == 3] = it["price"][item[kind == 3]]
    o = np.argsort(t, kind="stable")
    sess, item, t, kind, value = sess[o], item[o], t[o], kind[o], value[o]

    ns = _START_SECONDS * 10**9 + np.round(t * 1e6).astype(np.int64) * 1000  # microsecond resolution
    return pd.DataFrame({
        "user_id": user_ids[sess_user[sess]],
        "item_id": item_ids[item],
        "timestamp": pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC"),
        "event": pd.Categorical.from_codes(kind, categories=list(EVENT_TYPES)),
        "value": value,
        "session_id": sess.astype(np.int64),
    })

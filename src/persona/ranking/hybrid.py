"""Hybrid: one ranked list from many signals (candidate generators + a learned ranker + re-ranking).

Stage 1 asks each generator (EASE, ItemKNN, ALS, SASRec, ContentKNN, popularity, ...) for its top
``candidates`` items per user and merges them. Stage 2 scores every candidate with a ranker trained
on what the generators said and on the context (popularity, recency, activity, category match,
price against the user's usual spend, user features). Re-rankers (diversity, calibration, business
rules) reorder the ranked list last. See docs/ranking.md.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._validate import check_bool, check_int, check_number
from ..data.interactions import Interactions
from ..errors import ArtifactError, DataError, ParameterError, UnsupportedError
from ..kernels import topk
from ..models.base import Recommender
from ..typing import ArrayLike, Float32Array, ItemId, Ids, UserId
from ._features import PairFeatures, aligned_features
from ._rankers import RANKERS, make_ranker, ranker_from_state

__all__ = ["Hybrid", "default_generators"]

log = logging.getLogger("persona.ranking")

_GEN = "gen{}__"  # prefix of generator i's arrays and files inside the Hybrid's artifact
_RANKER_FILE = "ranker.txt"
_FILLER_GAP = 1.0  # non-candidates score below the row's lowest candidate by at least this much


def default_generators(interactions: Interactions) -> dict[str, Recommender]:
    """The generators ``Hybrid()`` uses when none are given, chosen for the data's size.

    EASE (when the catalogue has at most 30,000 items: it holds an items x items matrix), ItemKNN
    (BM25), ALS, most popular, and -- when events carry timestamps -- trending (7-day half-life).
    All are fast on one machine; add SASRec or ContentKNN by passing ``generators=``.
    """
    from ..models import ALS, EASE, ItemKNN, MostPopular

    gens: dict[str, Recommender] = {}
    if interactions.n_items <= 30_000:
        gens["ease"] = EASE()
    gens["itemknn"] = ItemKNN()
    gens["als"] = ALS()
    gens["popular"] = MostPopular()
    if interactions.timestamps is not None:
        gens["trending"] = MostPopular(half_life=7.0)
    return gens


def _clone(model: Recommender | str) -> Recommender:
    """A new, unfitted model with the same parameters (a registry name gives its default model)."""
    if isinstance(model, str):
        from ..models.registry import make_model

        return make_model(model)
    if isinstance(model, dict):  # as saved: {"class": name, "params": {...}}
        return _spec_from_data(model)
    return type(model)(**model.get_params())


def _spec_to_data(spec) -> Any:
    """A generator as the artifact stores it: a registry name, or its class name and parameters."""
    if isinstance(spec, Recommender):
        return {"class": type(spec).__name__, "params": spec.get_params()}
    return spec


def _spec_from_data(spec) -> Any:
    """Inverse of :func:`_spec_to_data`; only registered persona model classes can be named."""
    if not isinstance(spec, dict):
        return spec
    cls = Recommender._registry.get(spec.get("class")) if isinstance(spec.get("class"), str) else None
    if cls is None or spec["class"].startswith("_") or cls is Hybrid or not isinstance(spec.get("params"), dict):
        raise ArtifactError(f"a Hybrid generator names an unknown model {spec.get('class')!r}; upgrade persona or "
                            "check the artifact")
    try:
        return cls(**spec["params"])
    except (TypeError, ParameterError) as e:
        raise ArtifactError(f"a Hybrid generator's stored parameters do not fit {spec['class']} ({e})") from None


def _rows(histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Item-index rows as ``(indptr, indices)`` for the top-k kernel (no scipy matrix per request)."""
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    idx = np.concatenate(histories).astype(np.int64, copy=False) if indptr[-1] else np.zeros(0, np.int64)
    return indptr, idx


def _dedupe_rows(cand: np.ndarray) -> np.ndarray:
    """Each row's item indices once (first occurrence kept), -1 elsewhere; shape kept."""
    order = np.argsort(cand, axis=1, kind="stable")
    s = np.take_along_axis(cand, order, axis=1)
    dup = np.zeros_like(s, dtype=bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    out = cand.copy()
    np.put_along_axis(out, order, np.where(dup, -1, s), axis=1)
    return out


class Hybrid(Recommender):
    """Two-stage hybrid ranker: candidates from several models, ranked by a learned model.

    Parameters
    ----------
    generators : dict of str to Recommender (or registry name), optional
        The candidate generators, by name (the name labels their features and explanations).
        They are cloned: the models passed are not fitted or changed. Default:
        :func:`default_generators` (EASE, ItemKNN, ALS, popularity, trending).
    candidates : int, default 100
        Items asked of each generator per user; the lists are merged and de-duplicated.
    ranker : {"auto", "lightgbm", "logistic"}, default "auto"
        ``"lightgbm"``: LambdaRank (``pip install 'persona-recsys[ranking]'``); ``"logistic"``:
        logistic regression (numpy and scipy only); ``"auto"``: LightGBM when installed and at
        least 2,000 users label the ranker's pairs, the logistic ranker otherwise (it ranks better on
        little data).
    rerank : re-ranker or list of re-rankers, optional
        Applied to the ranked list, in order (``ps.ranking.MMR``, ``ps.ranking.Calibrated``,
        ``ps.ranking.Rules``); each reorders the top ``rerank_depth`` items.
    rerank_depth : int, default 50
        How many of the ranked items a re-ranker reorders.
    refit_deep : bool, default False
        Train deep generators (SASRec, TwoTower) a second time on everything to serve. By default
        the stage-1 network is kept and reads the full histories (``update_histories``), which
        halves their training time.
    max_train_users : int, default 10000
        Users whose held-out item labels the ranker's training pairs (a seeded sample when more).
    ranker_params : dict, optional
        Overrides of the ranker's settings (LightGBM parameters plus ``num_boost_round`` and
        ``early_stopping_rounds``; the logistic ranker's ``regularization`` and ``max_iter``).
    cold_users : float, default 0.0
        The share of the ranker's training users also shown to it as new visitors: their history
        hidden, their user features kept, their held-out item the label. With user features, this
        teaches the ranker how demographics matter when there is no history
        (``recommend_for_history([], n, user_features=...)``).
    sequence_features : bool, default True
        Give the ranker the order of each user's events: how often the candidate followed the
        user's latest items in the training sequences (by timestamp, else in the order given).
    random_state : int, default 0
    num_threads : int, default 0 (all cores)
    show_progress : bool, default True
        Log each stage of ``fit`` (generator fits, pair building, ranker) at INFO.

    Notes
    -----
    ``fit(train, valid=valid)`` fits the generators on ``train``, labels their candidates with
    ``valid``'s items and trains the ranker on that; without ``valid``, each user's last event is
    held out of ``train`` for the same purpose. Either way no label is seen by the generators that
    produced its candidates. The generators are then refitted on everything (``train`` plus
    ``valid``) to serve. Items outside every generator's candidates rank below all candidates
    (by popularity), so the filters' guarantee of exactly ``n`` items holds.

    ``update(new)`` updates every generator (each as its own ``update`` does) and the history-derived
    features: item and user activity, days since the last event, the sequence counts and each
    user's latest items exactly; recent popularity (7 and 30 days) adds the new pairs, and older
    events leave those windows only at a refit. The ranker is kept. New users and items get no
    user or item features (unknown codes) until a refit; an item is recommended when at least
    one generator places it.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=0)
    >>> train, valid, test = ps.split.leave_last_out(shop.interactions)
    >>> hybrid = ps.Hybrid(generators={"knn": ps.ItemKNN(), "pop": ps.MostPopular()}, candidates=30,
    ...                    ranker="logistic").fit(train, valid=valid)
    >>> items, scores = hybrid.recommend(test.user_ids[0], n=5)
    >>> len(items), len(hybrid.explain(test.user_ids[0], items))
    (5, 5)
    """

    answers_empty_history = True

    def __init__(self, *, generators: dict | None = None, candidates: int = 100, ranker: str = "auto",
                 rerank: Any = None, rerank_depth: int = 50, refit_deep: bool = False,
                 max_train_users: int = 10_000, ranker_params: dict | None = None, sequence_features: bool = True,
                 cold_users: float = 0.0, random_state: int | None = 0, num_threads: int = 0, show_progress: bool = True) -> None:
        self.generators = generators
        self.candidates = candidates
        self.ranker = ranker
        self.rerank = rerank
        self.rerank_depth = rerank_depth
        self.refit_deep = refit_deep
        self.max_train_users = max_train_users
        self.ranker_params = ranker_params
        self.sequence_features = sequence_features
        self.cold_users = cold_users
        self.random_state = random_state
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        gens = self.generators
        if isinstance(gens, list) and all(isinstance(p, list) and len(p) == 2 for p in gens):
            gens = dict(gens)  # the saved form: [[name, spec], ...] keeps the order JSON objects lose
        if gens is not None:
            if not isinstance(gens, dict) or not gens:
                raise ParameterError("generators: expected a non-empty dict {name: model}, e.g. "
                                     "{'ease': ps.EASE(), 'pop': ps.MostPopular()}, or None for the defaults; "
                                     f"got {type(gens).__name__}")
            for name, g in gens.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise ParameterError(f"generators: names must be identifiers such as 'ease', got {name!r}")
                if isinstance(g, dict):  # a saved description, rebuilt at load
                    continue
                if not isinstance(g, (Recommender, str)) or isinstance(g, Hybrid):
                    raise ParameterError(f"generators[{name!r}]: expected a persona model (not a Hybrid) or a "
                                         f"registry name, got {type(g).__name__}")
        check_int(self.candidates, "candidates", min=1, max=10_000)
        check_int(self.rerank_depth, "rerank_depth", min=1, max=10_000)
        check_int(self.max_train_users, "max_train_users", min=1)
        if self.ranker not in RANKERS:
            raise ParameterError(f"ranker: expected one of {RANKERS}, got {self.ranker!r}")
        if self.ranker_params is not None and not isinstance(self.ranker_params, dict):
            raise ParameterError(f"ranker_params: expected a dict, got {type(self.ranker_params).__name__}")
        check_bool(self.show_progress, "show_progress")
        check_bool(self.refit_deep, "refit_deep")
        check_bool(self.sequence_features, "sequence_features")
        check_number(self.cold_users, "cold_users", min=0.0, max=1.0,
                     expected="a share in [0, 1] of the training users also shown as new visitors")
        if self.rerank is not None:
            from .rerank import Reranker, as_reranker

            steps = self.rerank if isinstance(self.rerank, (list, tuple)) else [self.rerank]
            bad = [type(r).__name__ for r in steps if not isinstance(r, Reranker)]
            if bad:
                raise ParameterError(f"rerank: expected re-rankers (ps.ranking.MMR, Calibrated, Rules) or a list of "
                                     f"them, got {bad[0]}")
            as_reranker(self.rerank)

    # ------------------------------------------------------------------ fitting
    def fit(self, interactions: Interactions, *, valid: Interactions | None = None, user_features: Any = None,
            item_features: Any = None) -> Hybrid:
        """Fit the generators, train the ranker on held-out items, refit the generators on everything.

        Parameters
        ----------
        interactions : Interactions
            Training events.
        valid : Interactions, optional
            Later events (e.g. ``ps.split.leave_last_out``'s validation part) whose items label the
            ranker's training pairs; they are part of what the served model knows.
        user_features, item_features : persona.data.Features or scipy sparse matrix, optional
            Side information (a Features matched by id, or one row per user / item of the
            training interactions). Categorical fields give category-match features and codes;
            numeric fields (e.g. price) give "against the user's usual" features.
        """
        if valid is not None and not isinstance(valid, Interactions):
            raise DataError(f"valid must be a persona.Interactions (e.g. from ps.split.leave_last_out), "
                            f"got {type(valid).__name__}")
        if not isinstance(interactions, Interactions):
            return super().fit(interactions)  # the base class says what to pass
        full = interactions if valid is None or not len(valid) else interactions.concat(valid)
        return super().fit(full, train=interactions, valid=valid, user_features=user_features,
                           item_features=item_features)

    def _fit(self, full: Interactions, *, train: Interactions, valid, user_features, item_features) -> None:
        import time

        t0 = time.perf_counter()
        self._say = log.info if self.show_progress else log.debug
        item_f = aligned_features(item_features, full.item_map, "item_features")
        user_f = aligned_features(user_features, full.user_map, "user_features")
        specs = self.generators if self.generators is not None else default_generators(full)
        self.generator_names_ = list(specs)
        if valid is not None and len(valid):
            gen_train = train.with_maps(full.user_map, full.item_map)
            targets = valid.with_maps(full.user_map, full.item_map)
        else:
            from ..split import leave_last_out

            a, b, targets = leave_last_out(full, min_events=3)
            gen_train = a.concat(b)
        if not len(targets):
            raise DataError("Hybrid needs held-out events to train its ranker: pass valid=, or give users with at "
                            "least 3 events (each one's last event is held out)")
        # ---- stage 1 on the training part, pairs labelled by the held-out items, the ranker
        stage1 = self._fit_generators(specs, gen_train, "training")
        context = self._pair_features().fit(gen_train, item_f, user_f)
        X, y, groups, recall = self._training_pairs(stage1, context, gen_train, targets)
        self.candidate_recall_ = recall
        self.training_groups_ = len(groups)  # users (and visitor copies) whose pairs trained the ranker
        self._say("Hybrid: %d training pairs from %d users (candidate recall %.3f); training the %s ranker",
                  len(X), len(groups), recall, self.ranker)
        if not y.any():
            raise DataError("no held-out item is among any generator's candidates; raise candidates= or check the "
                            "split (the ranker has nothing to learn from)")
        t = time.perf_counter()
        self.ranker_ = make_ranker(self.ranker, self.ranker_params, random_state=self.random_state,
                                   num_threads=self.num_threads, n_groups=len(groups)).fit(
            X, y, groups, context.names, context.categorical)
        self.ranker_fit_s_ = time.perf_counter() - t
        del X, y
        # ---- the served model: generators on everything, the context of everything
        self.generators_ = self._fit_generators(specs, full, "serving", reuse=None if self.refit_deep else stage1)
        self.features_ = self._pair_features().fit(full, item_f, user_f)
        self._item_labels = {f: item_f.categories(f) for f in self.features_.item_cat_fields} if item_f else {}
        self._user_labels = {f: user_f.categories(f) for f in self.features_.user_cat_fields} if user_f else {}
        self._popularity = self.features_.item_log_users
        self.reranker_ = None
        if self.rerank is not None:  # a clone: the re-ranker passed in stays unfitted
            from .rerank import as_reranker

            self.reranker_ = as_reranker(self.rerank).clone().fit(self)
        self.fit_s_ = time.perf_counter() - t0
        self._say("Hybrid fitted in %.1f s", self.fit_s_)

    def _pair_features(self) -> PairFeatures:
        return PairFeatures(self.generator_names_, candidates=self.candidates, sequence=self.sequence_features)

    def _fit_generators(self, specs: dict, data: Interactions, stage: str, reuse=None) -> list[Recommender]:
        """Fitted clones of the generators; with ``reuse``, deep models of stage 1 read ``data``'s histories."""
        import time

        out = []
        for i, (name, spec) in enumerate(specs.items()):
            t = time.perf_counter()
            if reuse is not None and hasattr(reuse[i], "update_histories"):
                out.append(reuse[i].update_histories(data))  # no second training run: new histories only
                self._say("Hybrid: %s generator %r reads the full histories (%.1f s)", stage, name,
                          time.perf_counter() - t)
                continue
            g = _clone(spec)
            params = g.get_params()
            if "show_progress" in params:
                g.set_params(show_progress=False)
            if "random_state" in params and params["random_state"] is None and self.random_state is not None:
                g.set_params(random_state=self.random_state)  # a seeded Hybrid is reproducible end to end
            if "num_threads" in params and not params["num_threads"] and self.num_threads:
                g.set_params(num_threads=self.num_threads)
            g.fit(data)
            out.append(g)
            self._say("Hybrid: %s generator %r fitted in %.1f s", stage, name, time.perf_counter() - t)
        return out

    def _training_pairs(self, gens, context: PairFeatures, gen_train: Interactions, targets: Interactions):
        """Feature rows, labels and group sizes of the sampled target users' candidates.

        With ``cold_users``, a seeded share of those users also comes as new visitors: no history,
        their own user features, the same label.
        """
        users = np.unique(targets.users)
        if len(users) > self.max_train_users:
            rng = np.random.default_rng(self.random_state)
            users = np.sort(rng.choice(users, size=self.max_train_users, replace=False))
        tmat = targets.matrix.tocsr()
        seen = gen_train.matrix.tocsr()
        parts, hit = [], 0
        step = self._batch_rows()
        for s in range(0, len(users), step):
            block = users[s:s + step]
            hists = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in block]
            part, n_hit = self._labelled_pairs(gens, context, block, hists, tmat, visitors=False)
            hit += n_hit
            parts += [part] if part is not None else []
        if self.cold_users and context.user_cat_fields:
            rng = np.random.default_rng(None if self.random_state is None else self.random_state + 1)
            cold = users[rng.random(len(users)) < self.cold_users]
            for s in range(0, len(cold), step):
                block = cold[s:s + step]
                empty = [np.zeros(0, dtype=np.int64)] * len(block)
                part, _ = self._labelled_pairs(gens, context, block, empty, tmat, visitors=True)
                parts += [part] if part is not None else []
        if not parts:
            return np.zeros((0, len(context.names)), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.0
        X, y, groups = (np.concatenate(column) for column in zip(*parts))
        return X, y, groups, hit / max(1, len(users))

    def _labelled_pairs(self, gens, context: PairFeatures, block: np.ndarray, hists: list, tmat, *, visitors: bool):
        """``((X, y, group sizes) or None, users with their label among the candidates)`` of a block.

        ``visitors``: the block's users as new visitors -- generators score their (empty) histories
        and no user index reaches the features, so nothing of their real history leaks in; their
        user-feature codes are set as a visitor's would be.
        """
        score = (lambda g: g._score_histories(hists)) if visitors else (lambda g: g._score_users(block))
        blocks = [self._generator_block(g, score(g), hists) for g in gens]
        cand = _dedupe_rows(np.concatenate([b[3] for b in blocks], axis=1))
        rows, cols = np.nonzero(cand >= 0)
        items = cand[rows, cols]
        label = np.asarray(tmat[block[rows], items]).ravel() > 0
        per_row = np.bincount(rows, weights=label, minlength=len(block)) > 0
        keep = per_row[rows]  # groups without a positive teach LambdaRank nothing
        if not keep.any():
            return None, int(per_row.sum())
        codes = ({f: context.user_codes[f][block[rows[keep]]] for f in context.user_cat_fields}
                 if visitors else None)
        X = context.build(rows[keep], items[keep], hists, [b[:3] for b in blocks], None if visitors else block, codes)
        sizes = np.bincount(rows[keep], minlength=len(block))[per_row]
        return (X, label[keep].astype(np.float32), sizes), int(per_row.sum())

    def _generator_block(self, gen: Recommender, scores: np.ndarray, histories: list[np.ndarray]):
        """(scores, rank, top-1 score, top candidate indices) of one generator for a block of rows."""
        scores = np.asarray(scores, dtype=np.float32)
        m, n_items = scores.shape
        excl = _rows(histories)
        c = min(self.candidates, n_items)
        idx, top = topk(scores, c, exclude=excl, num_threads=self.num_threads or 0)
        rank = np.full((m, n_items), c, dtype=np.int32)
        r, j = np.nonzero(idx >= 0)
        rank[r, idx[r, j]] = j
        best = np.where(idx[:, 0] >= 0, top[:, 0], 0.0).astype(np.float32) if c else np.zeros(m, np.float32)
        return scores, rank, best, idx

    # ------------------------------------------------------------------ serving
    def _batch_rows(self) -> int:
        # several dense (rows x items) arrays per generator are alive at once
        per_row = 4 * max(1, len(self.item_map_)) * 2 * max(1, len(getattr(self, "generator_names_", [1])))
        return max(1, min(4096, (64 << 20) // per_row))

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        users = np.asarray(user_indices, dtype=np.int64)
        ui = self.user_items_
        hists = [ui.indices[ui.indptr[u]:ui.indptr[u + 1]] for u in users]
        return self._ranked(lambda g: g._score_users(users), hists, users)

    def _score_histories(self, histories) -> np.ndarray:
        hists = [np.asarray(h, dtype=np.int64) for h in histories]
        return self._ranked(lambda g: g._score_histories(hists), hists, None)

    def _ranked(self, score_with, hists: list[np.ndarray], users, user_codes: dict | None = None) -> np.ndarray:
        """Dense (rows x items) final scores: the ranker's for candidates, popularity-ordered below for the rest."""
        blocks = [self._generator_block(g, score_with(g), hists) for g in self.generators_]
        m, n_items = blocks[0][0].shape
        cand = _dedupe_rows(np.concatenate([b[3] for b in blocks], axis=1))
        rows, cols = np.nonzero(cand >= 0)
        items = cand[rows, cols]
        X = self.features_.build(rows, items, hists, [b[:3] for b in blocks], users, user_codes or None)
        ranked = self.ranker_.predict(X) if len(X) else np.zeros(0, np.float32)
        low = np.full(m, np.inf, dtype=np.float32)
        np.minimum.at(low, rows, ranked)
        low = np.where(np.isfinite(low), low, 0.0)
        pop = self._popularity / (float(self._popularity.max()) + 1.0)  # in [0, 1)
        out = (low[:, None] - _FILLER_GAP - 1.0 + pop[None, :]).astype(np.float32)
        out[rows, items] = ranked
        if self.reranker_ is not None:
            self._apply_reranker(out, hists)
        return out

    def _apply_reranker(self, out: np.ndarray, hists: list[np.ndarray]) -> None:
        """Reorder each row's top ``rerank_depth`` in place (their scores become the new order's).

        Items a re-ranker must see (``Rules``' pins) join each row's pool unless already in the
        user's history; the request's filters still apply after, so a filtered pin is not forced in.
        """
        m, n_items = out.shape
        depth = min(self.rerank_depth, n_items)
        excl = _rows(hists)
        idx, sc = topk(out, depth, exclude=excl, num_threads=self.num_threads or 0)
        extras = self.reranker_.extra_candidates()
        if len(extras):
            # each pin not in the pool nor the history joins it, scored just below the pool
            add = np.broadcast_to(np.asarray(extras, dtype=np.int64), (m, len(extras))).copy()
            present = (add[:, :, None] == idx[:, None, :]).any(axis=2)
            seen = np.array([np.isin(extras, h) for h in hists]).reshape(m, len(extras))
            add[present | seen] = -1
            low = np.where(idx >= 0, sc, np.inf).min(axis=1, keepdims=True)
            low = np.where(np.isfinite(low), low, 0.0)
            idx = np.concatenate([idx, add], axis=1)
            sc = np.concatenate([sc, np.where(add >= 0, low - 1.0, -np.inf).astype(np.float32)], axis=1)
        idx, sc = self.reranker_.rerank(hists, idx, sc, idx.shape[1])
        top = out.max(axis=1)
        pos = np.arange(idx.shape[1], dtype=np.float32)
        rows, cols = np.nonzero(idx >= 0)
        # strictly above everything else, in the re-ranked order
        out[rows, idx[rows, cols]] = top[rows] + 1.0 + (idx.shape[1] - pos[cols])

    # ------------------------------------------------------------------ streaming updates
    def _update(self, batch) -> None:
        import copy

        gens = [copy.copy(g).update(batch.inter) for g in self.generators_]
        for name, g in zip(self.generator_names_, gens):
            if not (np.array_equal(g.item_map_.ids, batch.item_map.ids)
                    and np.array_equal(g.user_map_.ids, batch.user_map.ids)):  # pragma: no cover - update's promise
                raise ArtifactError(f"Hybrid.update: generator {name!r} grew other id maps than the Hybrid; refit it")
        self.generators_ = gens
        masks = [g._placed_mask() for g in gens]
        placed = None if any(m is None for m in masks) else np.logical_or.reduce(masks)
        self.placed_items_ = None if placed is None or placed.all() else placed
        self.features_ = _updated_features(self.features_, batch)
        self._popularity = self.features_.item_log_users
        if self.reranker_ is not None and batch.n_items > batch.n_items_old:
            try:  # per-item state of the re-ranker (similarities, categories) must cover the new items
                self.reranker_ = self.reranker_.clone().fit(self)
            except Exception as e:  # noqa: BLE001 - named, and the update is refused as a whole
                raise ParameterError(f"Hybrid.update: the re-ranker {type(self.reranker_).__name__} cannot take the "
                                     f"{batch.n_items - batch.n_items_old} new item(s) ({e}); give it per-item data "
                                     "by id (a dict), or refit the Hybrid") from e

    # similar_items and recommend_users are single-signal questions: the first generator that
    # answers them (in the order given, popularity last) does
    def _delegate(self, capability: str) -> Recommender:
        from ..models import MostPopular

        ordered = sorted(self.generators_, key=lambda g: isinstance(g, MostPopular))
        for g in ordered:
            if getattr(g, capability):
                return g
        raise UnsupportedError(f"none of this Hybrid's generators ({self.generator_names_}) has {capability}")

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        return self._delegate("supports_similar_items")._score_similar(item_indices)

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        return self._delegate("supports_audience")._score_audience(item_indices)

    def recommend_for_history(self, history: Ids, n: int = 10, *, filter_seen: bool = True,
                              items: Ids | None = None, exclude: Ids | None = None, mask: ArrayLike | None = None,
                              user_features: dict | None = None) -> tuple[np.ndarray, Float32Array]:
        """Recommendations for a history of item ids; ``user_features`` describe a new visitor.

        ``user_features`` maps a user categorical field to its value (``{"gender": "F",
        "age_band": "25-34"}``), so a first-time visitor with demographics only is ranked with them.
        """
        if not user_features:
            return super().recommend_for_history(history, n, filter_seen=filter_seen, items=items,
                                                 exclude=exclude, mask=mask)
        codes = self._user_codes(user_features)
        self._check_fitted()
        hist = [self._item_indices(history, strict=False, what="history") if len(history) else np.zeros(0, np.int64)]
        scores = self._ranked(lambda g: g._score_histories(hist), hist, None, codes)
        n = self._width(self._n_arg(n))
        allow, extra, mask = self._filters(1, items, exclude, mask)
        excl = [np.concatenate([hist[0], extra[0]]) if extra is not None else hist[0]] if filter_seen else extra
        idx, sc = self._select(scores, n, excl, allow, mask)
        keep = idx[0] >= 0
        ids, sc = self._to_ids(idx[:, keep], sc[:, keep])
        return ids[0], sc[0]

    def _user_codes(self, values: dict) -> dict:
        if not isinstance(values, dict):
            raise ParameterError(f"user_features: expected a dict {{field: value}}, got {type(values).__name__}")
        out = {}
        for f, v in values.items():
            labels = self._user_labels.get(f)
            if labels is None:
                raise ParameterError(f"user_features: unknown field {f!r}; this Hybrid was fitted with the user "
                                     f"categorical fields {list(self._user_labels)}")
            out[f] = labels.index(str(v)) if str(v) in labels else -1
        return out

    # ------------------------------------------------------------------ explanations
    def explain(self, user: UserId, items: Ids | ItemId, *, details: bool = False) -> Any:
        """One reason per item of ``items`` for ``user`` (the group of features that raised it most).

        Reasons name what drove the ranker's score: a generator (with the history item the
        candidate is most similar to, for history-based generators), popularity, trending, a
        category the user favours, a price near the user's usual, or users like them.

        Returns a list of str, or with ``details=True`` a pandas DataFrame with columns
        ``item, reason, source, contribution, anchor``.
        """
        self._check_fitted()
        u = self._user_indices(np.asarray([user]), allow_unknown=False)[0]
        idx = self._item_indices(items, strict=True)
        ui = self.user_items_
        hist = ui.indices[ui.indptr[u]:ui.indptr[u + 1]]
        users = np.array([u])
        blocks = [self._generator_block(g, g._score_users(users), [hist]) for g in self.generators_]
        rows = np.zeros(len(idx), dtype=np.int64)
        X = self.features_.build(rows, idx, [hist], [b[:3] for b in blocks], users)
        contrib = self.ranker_.contributions(X)[:, :-1]
        names = self.features_.names
        group_names = list(dict.fromkeys(self.features_.group_of(c) for c in names))
        col_group = np.array([group_names.index(self.features_.group_of(c)) for c in names])
        per_group = np.zeros((len(idx), len(group_names)))
        for j in range(len(group_names)):
            per_group[:, j] = contrib[:, col_group == j].sum(axis=1)
        best = per_group.argmax(axis=1)
        anchors = self._anchors(hist, idx)
        out = []
        for k, it in enumerate(idx):
            source = group_names[best[k]]
            out.append((self.item_map_.ids[it], self._reason(source, anchors.get(source, {}).get(k), it, hist),
                        source, float(per_group[k, best[k]]),
                        None if anchors.get(source, {}).get(k) is None else self.item_map_.ids[anchors[source][k]]))
        if details:
            import pandas as pd

            return pd.DataFrame(out, columns=["item", "reason", "source", "contribution", "anchor"])
        return [r[1] for r in out]

    def _anchors(self, hist: np.ndarray, idx: np.ndarray) -> dict:
        """For history-based generators: the history item that alone scores each explained item highest."""
        from ..models import MostPopular

        out = {}
        recent = hist[-50:]
        if not len(recent):
            return out
        for name, g in zip(self.generator_names_, self.generators_):
            if isinstance(g, MostPopular) or not g.supports_history:
                continue
            try:
                single = np.asarray(g._score_histories([np.array([h]) for h in recent]), dtype=np.float32)
            except (UnsupportedError, NotImplementedError):
                continue
            out[name] = dict(enumerate(recent[single[:, idx].argmax(axis=0)]))
        return out

    def _reason(self, source: str, anchor, item: int, hist: np.ndarray) -> str:
        from ..models import MostPopular

        if source in self.generator_names_:
            g = self.generators_[self.generator_names_.index(source)]
            if isinstance(g, MostPopular):
                return "trending now" if g.half_life is not None else "popular with shoppers"
            if anchor is not None:
                return f"because of {self.item_map_.ids[anchor]} in your history"
            return "matches your history"
        if source == "popularity":
            return "popular with shoppers"
        if source == "trending":
            return "trending now"
        if source == "sequence":
            return "often chosen next after your latest items"
        if source == "attributes":
            return "like the items you chose"
        if source == "agreement":
            return "matches your history"
        if source.startswith("category:"):
            field = source.split(":", 1)[1]
            code = self.features_.item_codes[field][item]
            labels = self._item_labels.get(field, [])
            label = labels[code] if 0 <= code < len(labels) else "this category"
            return f"you often choose {label}"
        if source.startswith("numeric:"):
            return f"in your usual {source.split(':', 1)[1]} range"
        return "popular with shoppers like you"

    # ------------------------------------------------------------------ persistence
    def feature_importance(self) -> dict:
        """The ranker's importance of each feature (LightGBM gain, or |coefficient| for the logistic ranker)."""
        self._check_fitted()
        return self.ranker_.importance(self.features_.names)

    def _artifact_parts(self, depth: int = 0):
        out, arrays, files = super()._artifact_parts(depth)
        if self.generators is not None:
            out["params"]["generators"] = [[n, _spec_to_data(g)] for n, g in self.generators.items()]
        out["params"]["rerank"] = None
        gen_meta = []
        for i, g in enumerate(self.generators_):
            if getattr(g, "fallback_", None) is not None:
                raise ParameterError("a Hybrid's generators cannot carry their own fallback; set one on the Hybrid")
            g_meta, g_arrays, g_files = g._artifact_parts(depth + 1)
            gen_meta.append(g_meta)
            arrays.update({_GEN.format(i) + k: v for k, v in g_arrays.items()})
            files.update({_GEN.format(i) + k: w for k, w in g_files.items()})
        out["state"]["generators"] = gen_meta
        return out, arrays, files

    def _state(self):
        f_meta, f_arrays = self.features_.state()
        r_meta, r_arrays, text = self.ranker_.state()
        meta = {"generator_names": self.generator_names_, "features": f_meta, "ranker": r_meta,
                "item_labels": self._item_labels, "user_labels": self._user_labels,
                "candidate_recall": self.candidate_recall_,
                "reranker": None}
        arrays = {**f_arrays, **r_arrays}
        if self.reranker_ is not None:
            from .rerank import reranker_state

            meta["reranker"], rr_arrays = reranker_state(self.reranker_)
            arrays.update({"rr__" + k: v for k, v in rr_arrays.items()})
        self._ranker_text = text
        return meta, arrays

    def _files(self) -> dict:
        text = getattr(self, "_ranker_text", None)
        if text is None:
            return {}

        def write(path, text=text):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return {_RANKER_FILE: write}

    def _restore(self, meta: dict, arrays: dict) -> None:
        files = meta.get("_files", {})
        names = [str(n) for n in meta["generator_names"]]
        gen_meta = meta.get("generators")
        if not isinstance(gen_meta, list) or len(gen_meta) != len(names) or not names:
            raise ArtifactError("the Hybrid's generators are missing or do not match their names")
        flags = {k: v for k, v in meta.items() if k in ("_mmap", "_authentic")}
        self.generator_names_ = names
        self.generators_ = []
        for i, g_meta in enumerate(gen_meta):
            p = _GEN.format(i)
            g = Recommender._from_parts("<hybrid generator>", g_meta,
                                        {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)},
                                        {k[len(p):]: v for k, v in files.items() if k.startswith(p)}, flags, depth=1)
            self.generators_.append(g)
        if self.generators is not None:
            self.generators = {str(n): _spec_from_data(g) for n, g in self.generators}
        self.features_ = PairFeatures.from_state(meta["features"], arrays, len(self.user_map_), len(self.item_map_))
        text = None
        if _RANKER_FILE in files:
            with open(files[_RANKER_FILE], encoding="utf-8") as fh:
                text = fh.read()
        self.ranker_ = ranker_from_state(meta["ranker"], arrays, text, self.features_.names,
                                         authentic=bool(meta.get("_authentic")))
        self._item_labels = {str(k): [str(x) for x in v] for k, v in meta.get("item_labels", {}).items()}
        self._user_labels = {str(k): [str(x) for x in v] for k, v in meta.get("user_labels", {}).items()}
        self.candidate_recall_ = float(meta.get("candidate_recall", float("nan")))
        self._popularity = self.features_.item_log_users
        self._ranker_text = text
        self.reranker_ = None
        if meta.get("reranker") is not None:
            from .rerank import reranker_from_state

            restored = reranker_from_state(meta["reranker"], {k[4:]: v for k, v in arrays.items() if k.startswith("rr__")})
            self.rerank = restored.clone()
            self.reranker_ = restored.fit(self)

    def _check_state(self) -> None:
        for name, g in zip(self.generator_names_, self.generators_):
            if len(g.item_map_) != len(self.item_map_) or not np.array_equal(g.item_map_.ids, self.item_map_.ids):
                raise ArtifactError(f"generator {name!r} knows other items than the Hybrid; the artifact is inconsistent")
            if len(g.user_map_) != len(self.user_map_) or not np.array_equal(g.user_map_.ids, self.user_map_.ids):
                raise ArtifactError(f"generator {name!r} knows other users than the Hybrid; the artifact is inconsistent")


def _updated_features(f: PairFeatures, batch) -> PairFeatures:
    """``f`` (the fitted pair context) with the batch's events folded in; ``f`` itself is unchanged.

    Activity, days since the last event, the sequence counts and the latest items are what a refit
    on all events computes (for events later than the fitted ones); the 7 / 30 day popularity adds
    the new user-item pairs without letting old ones age out; new users and items get unknown codes.
    """
    import copy

    from ..models._update import grow_csr, grow_vector, stored

    day = 86400.0
    out = copy.copy(f)
    inter, n_users, n_items = batch.inter, batch.n_users, batch.n_items
    users, items = inter.users.astype(np.int64), inter.items.astype(np.int64)
    out.item_log_users = np.log1p(np.asarray((batch.user_items > 0).sum(axis=0), dtype=np.float64).ravel()
                                  ).astype(np.float32)
    events = np.rint(np.expm1(grow_vector(f.user_log_events.astype(np.float64), n_users)))
    out.user_log_events = np.log1p(events + np.bincount(users, minlength=n_users)).astype(np.float32)
    if f.has_time:
        if inter.timestamps is None:
            raise DataError("Hybrid.update: expected new events with timestamps (the Hybrid was fitted with them), "
                            "got none; build them with a time column")
        ts = inter.timestamps
        now = max(float(f.now), float(ts.max()))
        shift = (now - float(f.now)) / day
        out.now = now
        for name, idx, n in (("item_days_since_last", items, n_items), ("user_days_since_last", users, n_users)):
            last = np.full(n, -np.inf)
            np.maximum.at(last, idx, ts)
            fresh = np.where(np.isfinite(last), (now - last) / day, np.nan)
            aged = grow_vector(getattr(f, name).astype(np.float64), n, np.nan) + shift
            setattr(out, name, np.fmin(aged, fresh).astype(np.float32))
        key = np.unique(users * n_items + items)
        new_pair = ~stored(batch.old_rows(), key // n_items, key % n_items)
        for days, name in ((7, "item_log_users_7d"), (30, "item_log_users_30d")):
            recent = np.zeros(len(key), dtype=bool)
            in_window = ts >= now - days * day
            recent[np.searchsorted(key, users[in_window] * n_items + items[in_window])] = True
            add = np.bincount(key[recent & new_pair] % n_items, minlength=n_items)
            old = np.rint(np.expm1(grow_vector(getattr(f, name).astype(np.float64), n_items)))
            setattr(out, name, np.log1p(old + add).astype(np.float32))
    if f.sequence:
        _update_sequences(out, f, users, items, n_users, n_items)
    out.item_codes = {k: grow_vector(v, n_items, -1) for k, v in f.item_codes.items()}
    out.item_values = {k: grow_vector(v, n_items, np.nan) for k, v in f.item_values.items()}
    out.user_codes = {k: grow_vector(v, n_users, -1) for k, v in f.user_codes.items()}
    shares = getattr(f, "user_share", None)
    if shares:  # how popular each item is in each user segment: recounted on the merged events
        from ._features import _segment_shares

        out.user_share = {}
        for field, table in shares.items():
            fresh = _segment_shares(batch.user_items, out.user_codes[field], n_items)
            out.user_share[field] = fresh if fresh is not None else \
                np.hstack([table, np.zeros((len(table), n_items - table.shape[1]), table.dtype)])
    if f.attributes is not None:
        out.attributes = grow_csr(f.attributes, (n_items, f.attributes.shape[1]))
    return out


def _update_sequences(out: PairFeatures, f: PairFeatures, users: np.ndarray, items: np.ndarray, n_users: int,
                      n_items: int) -> None:
    """The pair counts of each user's latest items followed by the batch's, and the new latest items."""
    from ..models._update import grow_rows
    from ._features import SEQ_RECENT, SEQ_WINDOW, PairCounts

    recent = grow_rows(f.user_recent.astype(np.int64), n_users, -1)  # latest first
    touched = np.unique(users)
    tails = recent[touched][:, ::-1]  # oldest first
    live = tails >= 0
    row = np.concatenate([np.nonzero(live)[0], np.searchsorted(touched, users)])
    part = np.concatenate([np.zeros(int(live.sum()), np.int8), np.ones(len(users), np.int8)])
    seq = np.concatenate([tails[live], items])
    order = np.lexsort((part, row))  # per user: the known tail, then the batch in time order
    row, part, seq = row[order], part[order], seq[order]

    def counts(offsets) -> tuple[np.ndarray, np.ndarray]:
        keys = []
        for d in offsets:
            if d < len(seq):
                ok = (row[d:] == row[:-d]) & (part[d:] == 1)  # pairs that end in a new event
                keys.append(seq[:-d][ok] * n_items + seq[d:][ok])
        k = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        return np.unique(k, return_counts=True)

    def merged(old: PairCounts, offsets) -> PairCounts:
        k_old = (old.keys // old.n_items) * n_items + old.keys % old.n_items  # keys in the grown catalogue
        k_new, c_new = counts(offsets)
        k, inv = np.unique(np.concatenate([k_old, k_new]), return_inverse=True)
        c = np.bincount(inv, weights=np.concatenate([old.counts, c_new]).astype(np.float64))
        return PairCounts(k.astype(np.int64), c.astype(np.float32), n_items)

    out.next_counts = merged(f.next_counts, (1,))
    out.window_counts = merged(f.window_counts, range(1, SEQ_WINDOW + 1))
    k_next, c_next = counts((1,))
    total = grow_rows(f.item_next_total.astype(np.float64), n_items)
    total += np.bincount(k_next // n_items, weights=c_next, minlength=n_items)
    out.item_next_total = total.astype(np.float32)
    ends = np.cumsum(np.bincount(row, minlength=len(touched)))
    starts = ends - np.bincount(row, minlength=len(touched))
    latest = np.full((len(touched), SEQ_RECENT), -1, dtype=np.int64)
    for j in range(SEQ_RECENT):
        pos = ends - 1 - j
        has = pos >= starts
        latest[has, j] = seq[pos[has]]
    recent[touched] = latest
    out.user_recent = recent.astype(f.user_recent.dtype)

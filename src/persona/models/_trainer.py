"""The one training loop of persona's PyTorch models (SASRec, TwoTower and the next deep model).

A deep model brings its network and its batches (with their loss); :class:`Trainer` owns the rest:
seeding, PyTorch's thread count, the Adam optimiser, the epoch loop and its progress bar,
validation with early stopping and best-epoch restore, checkpoints, and ONNX export.

``torch`` is passed in, never imported here, so importing this module never imports PyTorch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import ArtifactError, ParameterError
from ._neural import export_onnx

log = logging.getLogger("persona.models")

# Hyperparameters that change how long a run goes or how it reports, not what an epoch computes:
# a checkpoint written under other values of these may still be resumed.
_RESUMABLE_ACROSS = ("epochs", "patience", "checkpoint", "show_progress", "num_threads")


def import_torch(model):
    """``torch``, or an ImportError that says how to install it and that serving does not need it."""
    name = type(model).__name__
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(f"{name}.fit needs PyTorch; install persona-recsys[train] "
                          f"(pip install 'persona-recsys[train]'). A fitted, saved {name} serves without it.") from None
    return torch


#: learning-rate schedules the trainer runs (a model's ``lr_schedule``; "constant" when it has none)
LR_SCHEDULES = ("constant", "plateau")

class Trainer:
    """Train a model's PyTorch network: everything around the network and its batches.

    Use it as a context manager inside ``_fit``. Entering resolves the seed, seeds PyTorch and a
    numpy generator (:attr:`rng`) and sets PyTorch's thread count; leaving restores the thread count,
    even on an error. Build the network *inside* the block, so the seed fixes its initial weights.
    Then :meth:`fit` runs the epochs and :meth:`export` turns a module into an ONNX graph.

    Parameters
    ----------
    model : Recommender
        The model being fitted. The trainer reads its hyperparameters ``epochs``, ``patience``,
        ``learning_rate``, ``random_state``, ``num_threads`` and ``show_progress``, and :meth:`fit`
        sets its ``history_``, ``best_epoch_``, ``fit_seconds_`` and ``_network``.
    torch : module
        PyTorch (see :func:`import_torch`).
    **adam
        More arguments of ``torch.optim.Adam`` (``betas``, ``weight_decay``); the learning rate
        is the model's.

    Attributes
    ----------
    seed : int
        ``model.random_state``, or a fresh random seed when it is None.
    rng : numpy.random.Generator
        Seeded with :attr:`seed`; ``batches`` draws from it (order, negatives, dropout masks), so
        a checkpoint can save and restore it.

    Examples
    --------
    What the next deep model -- say a ranker MLP over feature rows ``x`` with click labels ``y`` --
    writes in its ``_fit``; nothing else about training is its concern::

        torch = import_torch(self)
        with Trainer(self, torch, weight_decay=1e-5) as trainer:
            net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                                      torch.nn.Linear(64, 1))            # the network

            def batches(rng):                                              # one epoch of batches
                for rows in np.array_split(rng.permutation(len(y)), max(len(y) // 256, 1)):
                    yield torch.from_numpy(x[rows]), torch.from_numpy(y[rows])

            def loss(batch):                                               # (mean loss, its weight)
                xb, yb = batch
                logits = net(xb).squeeze(1)
                return torch.nn.functional.binary_cross_entropy_with_logits(logits, yb), len(yb)

            trainer.fit(net, batches, loss)           # add validate=... for early stopping
            self.scorer_onnx_ = trainer.export(net, torch.zeros((2, x.shape[1])), "features", "scores")
    """

    def __init__(self, model, torch, **adam: Any):
        self.model, self.torch, self.adam = model, torch, adam
        self.name = type(model).__name__
        rs = model.random_state
        self.seed = int(rs) if rs is not None else int(np.random.SeedSequence().entropy % 2**31)
        self.rng: np.random.Generator | None = None
        self._old_threads: int | None = None

    def __enter__(self) -> Trainer:
        torch = self.torch
        self._old_threads = torch.get_num_threads()
        if self.model.num_threads:
            torch.set_num_threads(int(self.model.num_threads))
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        return self

    def __exit__(self, *exc) -> None:
        # torch's thread count is process-wide: a fit must not leave the caller's changed
        self.torch.set_num_threads(self._old_threads)

    # ------------------------------------------------------------------ the epochs
    def fit(self, net, batches: Callable[[np.random.Generator], Iterable], loss: Callable[[Any], tuple],
            *, validate: Callable[[Any], tuple[float, float]] | None = None, checkpoint: Checkpoint | None = None):
        """Train ``net`` with Adam for up to ``model.epochs`` epochs; returns it in eval mode.

        Parameters
        ----------
        net : torch.nn.Module
            The network; all its parameters are optimised.
        batches : callable
            ``batches(rng)`` yields one epoch's batches (anything ``loss`` accepts), drawing any
            randomness from ``rng`` (:attr:`rng`). It is called once per epoch with ``net`` in
            training mode and consumed lazily, one optimiser step per batch.
        loss : callable
            ``loss(batch)`` returns ``(loss, weight)``: a scalar tensor to minimise and how many
            examples it averages over (the epoch's reported loss is their weighted mean).
        validate : callable, optional
            ``validate(net)`` returns ``(NDCG@10, HR@10)`` on the validation data, e.g. through
            :func:`persona.models._neural.ranking_metrics`. Given it, training stops after
            ``model.patience`` epochs without a better NDCG@10 and ``net`` gets the best epoch's
            weights back; without it every epoch runs and the last one is kept.
        checkpoint : Checkpoint, optional
            Where the state is saved after every epoch and resumed from at the start.

        Returns
        -------
        torch.nn.Module
            ``net`` in eval mode, with the kept epoch's weights.
        """
        model, torch = self.model, self.torch
        epochs, patience = int(model.epochs), int(model.patience)
        opt = torch.optim.Adam(net.parameters(), lr=float(model.learning_rate), **self.adam)
        schedule = getattr(model, "lr_schedule", "constant")
        state = {"epoch": 0, "history": [], "best": -1.0, "best_epoch": 0, "waited": 0, "best_state": None}
        if checkpoint is not None:
            checkpoint.restore(torch, net, opt, self.rng, state)
        model.history_ = state["history"]
        if schedule != "constant" and model.history_:  # a resumed run goes on at the rate it had reached
            self._set_lr(opt, model.history_[-1].get("lr", float(model.learning_rate)))
        bar = None
        if model.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, initial=state["epoch"], desc=self.name, unit="epoch")
        t0 = time.perf_counter()
        for epoch in range(state["epoch"] + 1, epochs + 1):
            if validate is not None and state["waited"] >= patience:
                break  # a resumed run that had already stopped early
            record = {"epoch": epoch, "loss": self._epoch(net, opt, batches, loss)}
            if schedule != "constant":
                record["lr"] = opt.param_groups[0]["lr"]
            if validate is not None:
                ndcg, hr = validate(net)
                record.update({"valid_ndcg@10": ndcg, "valid_hr@10": hr})
                if ndcg > state["best"]:
                    state.update(best=ndcg, best_epoch=epoch, waited=0, best_state=copy.deepcopy(net.state_dict()))
                else:
                    state["waited"] += 1
                    if schedule == "plateau" and state["waited"] % max(1, patience // 3) == 0:
                        self._set_lr(opt, opt.param_groups[0]["lr"] * 0.5)  # finer steps before stopping
            state["epoch"] = epoch
            model.history_.append(record)
            if checkpoint is not None:
                checkpoint.save(torch, net, opt, self.rng, state)
            if bar is not None:
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
                bar.update(1)
            log.debug("%s epoch %d: %s", self.name, epoch, record)
            if validate is not None and state["waited"] >= patience:
                log.info("%s: early stop after epoch %d; best epoch %d (valid NDCG@10 %.4f)",
                         self.name, epoch, state["best_epoch"], state["best"])
                break
        if bar is not None:
            bar.close()
        if state["best_state"] is not None:
            net.load_state_dict(state["best_state"])
        model.best_epoch_ = state["best_epoch"] if validate is not None else len(model.history_)
        model.fit_seconds_ = time.perf_counter() - t0
        net.eval()
        model._network = net  # the PyTorch module, kept in memory for parity checks; never saved
        return net

    @staticmethod
    def _set_lr(opt, lr: float) -> None:
        for group in opt.param_groups:
            group["lr"] = float(lr)

    def _epoch(self, net, opt, batches, loss) -> float:
        """One pass over ``batches(rng)``, one Adam step per batch; the weighted mean loss."""
        net.train()
        total, count = 0.0, 0
        for batch in batches(self.rng):
            value, weight = loss(batch)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += value.detach().item() * weight
            count += weight
        return total / max(count, 1)

    # ------------------------------------------------------------------ the served graph
    def export(self, module, example, input_name: str, output_name: str) -> bytes:
        """``module`` as ONNX bytes (opset 17, dynamic batch): one input like ``example``, one output."""
        return export_onnx(self.torch, module, example, input_name, output_name)


# ---------------------------------------------------------------------------------- checkpoints
def fingerprint(model, seed: int, data: Iterable[np.ndarray]) -> dict:
    """What a checkpoint must match to be resumed: the hyperparameters that shape training, the data.

    ``data`` are the arrays that define the training (and validation) data; their bytes are hashed
    in order.
    """
    params = {k: v for k, v in model.get_params().items() if k not in _RESUMABLE_ACROSS}
    params["random_state"] = int(seed)
    digest = hashlib.sha256()
    for a in data:
        digest.update(np.ascontiguousarray(a).tobytes())
    return {"params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                       for k, v in params.items()},
            "data_sha256": digest.hexdigest()}


class Checkpoint:
    """A model's training state in a folder: ``state.json`` naming an ``arrays-<epoch>.npz``.

    The state is the network's weights, Adam's moments, the torch and numpy generators, the best
    epoch so far (and its weights) and the history. The arrays are written first and
    ``state.json`` replaced atomically after them, so a run killed at any moment leaves the
    previous complete epoch readable. Arrays and JSON only, no pickle.

    Parameters
    ----------
    folder : str or path
        Where the state lives (created on the first save).
    fingerprint : dict
        From :func:`fingerprint`; a checkpoint written under another one is refused.
    name : str
        The model's class name, for messages.
    """

    def __init__(self, folder, fingerprint: dict, name: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.name = name

    def restore(self, torch, net, opt, rng, state: dict) -> bool:
        """Load the saved state into ``net``, ``opt``, the generators and ``state``; False if none."""
        meta_path = self.folder / "state.json"
        if not meta_path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
            with np.load(self.folder / meta["arrays"], allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"the {self.name} checkpoint in {self.folder} is unreadable ({e}); delete the "
                                "folder to start afresh") from None
        if meta.get("fingerprint") != self.fingerprint:
            theirs, ours = meta.get("fingerprint", {}), self.fingerprint
            what = [k for k in ours["params"] if theirs.get("params", {}).get(k) != ours["params"][k]]
            if theirs.get("data_sha256") != ours["data_sha256"]:
                what.append("the training data")
            raise ParameterError(f"the checkpoint in {self.folder} was written by a {self.name} fit with other "
                                 f"{', '.join(what) or 'settings'}; pass another checkpoint folder, or delete this "
                                 "one to start afresh")
        net.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("net/")})
        opt_state = {"state": {}, "param_groups": opt.state_dict()["param_groups"]}
        for k, v in arrays.items():
            if k.startswith("opt/"):
                _, index, name = k.split("/")
                opt_state["state"].setdefault(int(index), {})[name] = torch.from_numpy(v)
        opt.load_state_dict(opt_state)
        torch.set_rng_state(torch.from_numpy(arrays["torch_rng"]))
        rng.bit_generator.state = meta["numpy_rng"]
        best = {k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("best/")}
        state.update(epoch=int(meta["epoch"]), history=list(meta["history"]), best=float(meta["best"]),
                     best_epoch=int(meta["best_epoch"]), waited=int(meta["waited"]), best_state=best or None)
        log.info("%s: resumed from %s after epoch %d", self.name, self.folder, state["epoch"])
        return True

    def save(self, torch, net, opt, rng, state: dict) -> None:
        """Write the state after an epoch; the previous epoch's arrays go once the new ones are named."""
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"net/{k}": v.detach().numpy() for k, v in net.state_dict().items()}
        for index, values in opt.state_dict()["state"].items():
            for name, v in values.items():
                arrays[f"opt/{index}/{name}"] = v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)
        if state["best_state"] is not None:
            arrays.update({f"best/{k}": v.detach().numpy() for k, v in state["best_state"].items()})
        arrays["torch_rng"] = torch.get_rng_state().numpy()
        name = f"arrays-{state['epoch']}.npz"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self.folder / name)
        meta = {"format": 1, "fingerprint": self.fingerprint, "arrays": name, "epoch": state["epoch"],
                "history": state["history"], "best": state["best"], "best_epoch": state["best_epoch"],
                "waited": state["waited"], "numpy_rng": rng.bit_generator.state}
        tmp = self.folder / ".state.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.folder / "state.json")
        for old in self.folder.glob("arrays-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

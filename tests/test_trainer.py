"""The one neural trainer (models/_trainer.py, issue 13 point 2): what it owns, shown on a model that
brings only a network and its batches -- the ranker MLP of the Trainer docstring."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the test extra installs PyTorch (pip install '.[test]')")

from persona.errors import ParameterError
from persona.models._trainer import Checkpoint, Trainer, fingerprint


class Ranker:
    """A stand-in deep model: the trainer's hyperparameters and get_params, nothing else."""

    def __init__(self, **kw):
        self.params = {"epochs": 6, "patience": 2, "learning_rate": 0.05, "random_state": 0, "num_threads": 1,
                       "show_progress": False, "checkpoint": None, "hidden": 8, **kw}
        self.__dict__.update(self.params)

    def get_params(self):
        return dict(self.params)

    def fit(self, x, y, validate=None, checkpoint=None):
        """The Trainer docstring's example, as a ranker MLP's _fit would write it."""
        with Trainer(self, torch, weight_decay=1e-5) as trainer:
            net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], self.hidden), torch.nn.ReLU(),
                                      torch.nn.Dropout(0.2), torch.nn.Linear(self.hidden, 1))

            def batches(rng):
                for rows in np.array_split(rng.permutation(len(y)), max(len(y) // 16, 1)):
                    yield torch.from_numpy(x[rows]), torch.from_numpy(y[rows])

            def loss(batch):
                xb, yb = batch
                logits = net(xb).squeeze(1)
                return torch.nn.functional.binary_cross_entropy_with_logits(logits, yb), len(yb)

            ckpt = None if checkpoint is None else Checkpoint(checkpoint, fingerprint(self, trainer.seed, [x, y]),
                                                              "Ranker")
            trainer.fit(net, batches, loss, validate=validate and (lambda net: validate(self, net)), checkpoint=ckpt)
            self.graph_ = trainer.export(net, torch.zeros((2, x.shape[1])), "features", "scores")
        return self


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


def params(net):
    return np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])  # a copy


def weights(model):
    return params(model._network)


def test_same_seed_same_weights_and_threads_restored(data):
    before = torch.get_num_threads()
    a, b = Ranker().fit(*data), Ranker().fit(*data)
    assert torch.get_num_threads() == before
    np.testing.assert_array_equal(weights(a), weights(b))
    assert not np.array_equal(weights(a), weights(Ranker(random_state=1).fit(*data)))
    assert len(a.history_) == 6 and a.best_epoch_ == 6 and a.history_[-1]["loss"] < a.history_[0]["loss"]
    assert not a._network.training and a.graph_[:4]  # eval mode, exported


def test_threads_restored_after_an_error(data):
    before = torch.get_num_threads()

    def broken(model, net):
        raise RuntimeError("validation broke")

    with pytest.raises(RuntimeError, match="validation broke"):
        Ranker(num_threads=before + 1).fit(*data, validate=broken)
    assert torch.get_num_threads() == before


def test_early_stopping_keeps_the_best_epoch(data):
    scripted = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    kept = {}

    def validate(model, net):
        kept[len(model.history_) + 1] = params(net)  # the weights this epoch's score belongs to
        return next(scripted), 0.0

    model = Ranker(patience=2).fit(*data, validate=validate)
    assert [h["epoch"] for h in model.history_] == [1, 2, 3, 4]  # epochs 3 and 4 did not beat epoch 2
    assert model.best_epoch_ == 2 and model.history_[1]["valid_ndcg@10"] == 0.5
    np.testing.assert_array_equal(weights(model), kept[2])


def test_checkpoint_resumes_to_the_same_weights(data, tmp_path):
    whole = Ranker(epochs=5).fit(*data)
    Ranker(epochs=2).fit(*data, checkpoint=tmp_path)
    resumed = Ranker(epochs=5).fit(*data, checkpoint=tmp_path)
    np.testing.assert_array_equal(weights(resumed), weights(whole))
    assert [h["loss"] for h in resumed.history_] == [h["loss"] for h in whole.history_]
    with pytest.raises(ParameterError, match="Ranker fit with other hidden"):
        Ranker(hidden=4).fit(*data, checkpoint=tmp_path)

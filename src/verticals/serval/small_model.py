"""The small vertical model of SERSAL: a tabular classifier taught from scratch by an LLM's soft, noisy labels.

`FTTransformerClassifier` is the paper's model (FT-Transformer trained with DivideMix-style noisy-label learning);
`BoostedTreesClassifier` is a quick baseline. Both are scikit-learn estimators: `fit(X, y)` takes soft labels
y in [0, 1] (hard 0/1 labels work too), `predict_proba(X)` returns an (n, 2) array.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional as F

from verticals.progress import progress_bar
from verticals.serval._checks import (
    BinaryClassifier,
    Rule,
    check_categorical,
    check_params,
    check_X,
    check_y,
    int_rule,
    real_rule,
)
from verticals.serval._epochs import clean_posterior, mix_epoch, plain_epoch
from verticals.serval._ft_transformer import FTTransformer
from verticals.serval.config import ServalError

CONFIG_NAME = "small_model.json"
WEIGHTS_NAME = "model.safetensors"
N_HEADS = 8

# Fitted attributes written to small_model.json under their own names (weights go to model.safetensors).
_SAVED_ATTRIBUTES = ("n_features_in_", "best_epoch_", "n_epochs_", "clean_fraction_", "history_")

class FTTransformerClassifier(BinaryClassifier, BaseEstimator):
    """FT-Transformer trained on soft labels, with DivideMix-style noisy-label learning.

    The model is from Gorishniy et al. (2021), https://arxiv.org/abs/2106.11959; the noisy-label training adapts
    DivideMix (Li et al., ICLR 2020, https://arxiv.org/abs/2002.07394) to one network and soft binary labels:
    after warm-up, a 2-component Gaussian mixture on per-row losses splits rows into clean (their label is
    refined towards the model's prediction) and noisy (their label is replaced by the model's sharpened guess),
    and training goes on with MixUp over both. Early stopping watches a held-out share of the same soft labels,
    so no gold label is ever needed.

    Parameters
    ----------
    categorical : sequence of (column_index, cardinality) pairs
        Columns holding integer codes 0..cardinality-1 (as floats); every other column is numeric and is
        standardised inside `fit`. X must hold no NaN: impute first.
    d_token, n_blocks : int
        Token width (a multiple of 8, the number of attention heads) and number of transformer blocks.
    epochs, batch_size, lr, weight_decay : training settings (AdamW).
        lr 3e-4 rather than 1e-3: on tables of a few hundred noisy rows it gave steadier results (measured).
    noisy : {"dividemix", "none"}
        "none" trains with plain soft-label binary cross-entropy. DivideMix pays off when a share of the labels
        is plainly wrong (flipped); on vague but calibrated soft labels it is on a par with "none" (measured).
    warmup_epochs : int
        Epochs of plain training before DivideMix starts; early stopping waits for them too.
    validation_fraction : float
        Share of rows held out (stratified on y > 0.5) for early stopping; 0 trains on all rows for `epochs`.
        The held-out labels are the same soft labels: plain training watches their cross-entropy, DivideMix
        their soft AUC (a ranking, since DivideMix is meant to disagree with some labels).
    patience : int
        Epochs without a better held-out score before training stops (counted after warm-up).
    seed : int
        Seeds the initialisation, shuffling, dropout, split and mixture; the global torch RNG is left untouched.
    device : str
        Torch device, "cpu" by default.
    progress : bool
        Show a progress bar on stderr.

    Attributes
    ----------
    n_features_in_ : int
    classes_ : ndarray of shape (2,)
        Always [0, 1].
    feature_mean_, feature_std_ : ndarray of shape (n_numeric,)
        Standardisation of the numeric columns, in column order.
    module_ : FTTransformer
        The trained network (best epoch).
    history_ : list of dict
        Per epoch: epoch, train_loss, val_loss, val_auc (None without held-out rows), clean_fraction (None
        during warm-up and with noisy="none").
    best_epoch_, n_epochs_ : int
        Epoch whose weights were kept, and epochs run.
    clean_fraction_ : float or None
        Share of training rows judged clean in the last DivideMix epoch (None if DivideMix never ran).

    Example
    -------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    >>> model = FTTransformerClassifier(epochs=3, warmup_epochs=1).fit(X, 0.1 + 0.8 * y)
    >>> model.predict_proba(X[:2]).shape
    (2, 2)
    """

    _rules: dict[str, Rule] = {
        "d_token": ((lambda v: int_rule(N_HEADS)[0](v) and v % N_HEADS == 0), f"a positive multiple of {N_HEADS}"),
        "n_blocks": int_rule(1), "epochs": int_rule(1), "batch_size": int_rule(2), "lr": real_rule(1e-12, math.inf),
        "weight_decay": real_rule(0, math.inf),
        "noisy": ((lambda v: v in ("dividemix", "none")), "'dividemix' or 'none'"),
        "warmup_epochs": int_rule(0), "validation_fraction": real_rule(0, 1), "patience": int_rule(1),
        "seed": int_rule(0),
    }

    def __init__(self, categorical: Sequence[tuple[int, int]] = (), d_token: int = 64, n_blocks: int = 2,
                 epochs: int = 100, batch_size: int = 128, lr: float = 3e-4, weight_decay: float = 1e-5,
                 noisy: str = "dividemix", warmup_epochs: int = 10, validation_fraction: float = 0.15,
                 patience: int = 15, seed: int = 0, device: str = "cpu", progress: bool = False) -> None:
        self.categorical = categorical
        self.d_token = d_token
        self.n_blocks = n_blocks
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.noisy = noisy
        self.warmup_epochs = warmup_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, X: Any, y: Any) -> FTTransformerClassifier:
        """Train on rows X (n, d) and soft labels y (n,) in [0, 1]; returns self."""
        check_params(self, self._rules)
        X = check_X(X, self.categorical)
        y = check_y(y, len(X))
        fit_rows, val_rows = self._split(y)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        numeric = X[:, self._columns()[0]]
        self.feature_mean_ = numeric.mean(axis=0)
        self.feature_std_ = np.where(numeric.std(axis=0) > 0, numeric.std(axis=0), 1.0)
        data = self._encode(X)
        labels = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        devices: list[int] | None = [] if torch.device(self.device).type == "cpu" else None
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            self.module_ = self._build()
            self._train(data, labels, torch.as_tensor(fit_rows), torch.as_tensor(val_rows))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of class 0 and class 1, shape (n, 2)."""
        check_is_fitted(self)
        data = self._encode(check_X(X, self.categorical, self.n_features_in_))
        p = torch.sigmoid(self._logits(data, torch.arange(len(X)))).double().cpu().numpy()
        return np.column_stack([1 - p, p])

    def save(self, folder: str | Path) -> Path:
        """Write `model.safetensors` and `small_model.json` into `folder` (created if needed); returns it."""
        check_is_fitted(self)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        tensors["feature_mean"] = torch.as_tensor(self.feature_mean_)
        tensors["feature_std"] = torch.as_tensor(self.feature_std_)
        save_file(tensors, folder / WEIGHTS_NAME)
        params = {**self.get_params(), "categorical": [[int(c), int(k)] for c, k in self.categorical]}
        meta = {"class": type(self).__name__, "params": params,
                **{name: getattr(self, name) for name in _SAVED_ATTRIBUTES}}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FTTransformerClassifier:
        """Rebuild a model written by `save` (nothing is unpickled)."""
        folder = Path(folder)
        meta = _read_meta(folder)
        if meta["class"] != cls.__name__:
            raise ServalError(f"{folder} holds a {meta['class']}, not a {cls.__name__}")
        params = {**meta["params"], "categorical": tuple(tuple(pair) for pair in meta["params"]["categorical"])}
        model = cls(**params)
        for name in _SAVED_ATTRIBUTES:
            setattr(model, name, meta[name])
        model.classes_ = np.array([0, 1])
        tensors = load_file(folder / WEIGHTS_NAME)
        model.feature_mean_ = tensors.pop("feature_mean").numpy()
        model.feature_std_ = tensors.pop("feature_std").numpy()
        model.module_ = model._build()
        model.module_.load_state_dict({k.removeprefix("module."): v for k, v in tensors.items()})
        return model

    def _columns(self) -> tuple[list[int], list[int]]:
        """Numeric and categorical column indices (categorical in the order given)."""
        categorical = check_categorical(self.categorical, self.n_features_in_)
        return [j for j in range(self.n_features_in_) if j not in categorical], list(categorical)

    def _build(self) -> FTTransformer:
        numeric, categorical = self._columns()
        cardinalities = [int(k) for _, k in self.categorical]
        return FTTransformer(len(numeric), cardinalities, self.d_token, self.n_blocks, N_HEADS).to(self.device)

    def _encode(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        numeric, categorical = self._columns()
        x_num = (X[:, numeric] - self.feature_mean_) / self.feature_std_
        return (torch.as_tensor(x_num, dtype=torch.float32, device=self.device),
                torch.as_tensor(X[:, categorical], dtype=torch.long, device=self.device))

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training and held-out row indices; stratified on y > 0.5 when both classes allow it."""
        rows = np.arange(len(y))
        n_val = math.ceil(self.validation_fraction * len(y))
        if len(y) - n_val < 2:
            raise ServalError(f"{len(y)} rows leave {len(y) - n_val} for training after holding out "
                              f"validation_fraction={self.validation_fraction}; at least 2 are needed")
        if n_val == 0:
            return rows, rows[:0]
        hard = y > 0.5
        stratify = hard if min(hard.sum(), (~hard).sum()) >= 2 and 2 <= n_val <= len(y) - 2 else None
        return tuple(train_test_split(rows, test_size=n_val, stratify=stratify, random_state=self.seed))

    def _train(self, data: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor, fit_rows: torch.Tensor,
               val_rows: torch.Tensor) -> None:
        """Epoch loop with label-free early stopping; leaves the best epoch's weights in `module_`.

        Plain training keeps the epoch with the lowest held-out soft-label cross-entropy. DivideMix keeps the
        highest held-out soft AUC, sought from the last warm-up epoch on: the warm-up only prepares the first
        clean/noisy split, and a lucky early epoch on a small noisy held-out set should not undo it.
        """
        optimizer = torch.optim.AdamW(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        dividemix = self.noisy == "dividemix"
        first_kept = min(max(self.warmup_epochs, 1), self.epochs) if dividemix else 1
        self.history_, self.clean_fraction_ = [], None
        best_score, best_state, waited = math.inf, None, 0
        with progress_bar("FT-Transformer", self.epochs, enabled=self.progress) as advance:
            for epoch in range(1, self.epochs + 1):
                clean_fraction = None
                if dividemix and epoch > self.warmup_epochs:
                    clean = clean_posterior(self._logits(data, fit_rows), y[fit_rows], rng)
                    clean_fraction = self.clean_fraction_ = float((clean > 0.5).float().mean())
                    train_loss = mix_epoch(self.module_, optimizer, data, y, fit_rows, clean,
                                           self._batches(fit_rows, generator), generator, rng)
                else:
                    train_loss = plain_epoch(self.module_, optimizer, data, y, self._batches(fit_rows, generator))
                val_loss, val_auc = self._validate(data, y, val_rows)
                self.history_.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                      "val_auc": val_auc, "clean_fraction": clean_fraction})
                advance(1, loss=f"{train_loss:.4f}", val_auc="-" if val_auc is None else f"{val_auc:.4f}")
                self.n_epochs_ = epoch
                if epoch < first_kept:
                    continue
                score: float = -epoch  # nothing held out: the last epoch is the best
                if val_loss is not None:
                    score = -val_auc if dividemix and val_auc is not None else val_loss
                if score < best_score:
                    best_score, waited, self.best_epoch_ = score, 0, epoch
                    best_state = {k: v.clone() for k, v in self.module_.state_dict().items()}
                elif epoch > self.warmup_epochs:
                    waited += 1
                    if waited >= self.patience:
                        break
        assert best_state is not None  # epochs >= 1, and a kept epoch beats math.inf unless its score is NaN
        self.module_.load_state_dict(best_state)
        self.module_.eval()

    def _batches(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return rows[torch.randperm(len(rows), generator=generator)].split(self.batch_size)

    def _validate(self, data, y, rows) -> tuple[float | None, float | None]:
        """Soft-label cross-entropy and soft AUC on the held-out rows (None, None if none are held out).

        The soft AUC counts each row as a positive with weight y and a negative with weight 1 - y. It only ranks,
        so it does not punish a model for being surer than the noisy labels, as DivideMix makes it on purpose:
        the cross-entropy rises as soon as DivideMix starts, however good the model gets (measured).
        """
        if not len(rows):
            return None, None
        logits = self._logits(data, rows)
        loss = F.binary_cross_entropy_with_logits(logits, y[rows]).item()
        score, target = logits.double().cpu().numpy(), y[rows].double().cpu().numpy()
        if target.min() == target.max() and target[0] in (0, 1):
            return loss, None  # one class only: no ranking to judge
        auc = roc_auc_score(np.repeat([1, 0], len(rows)), np.concatenate([score, score]),
                            sample_weight=np.concatenate([target, 1 - target]))
        return loss, float(auc)

    def _logits(self, data, rows: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of `rows`, in chunks so that large tables fit in memory."""
        self.module_.eval()
        with torch.inference_mode():
            return torch.cat([self.module_(data[0][chunk], data[1][chunk]) for chunk in rows.split(4096)])

def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ServalError(f"{folder} is not a saved small model: expected {CONFIG_NAME} and {WEIGHTS_NAME} in it")
    return json.loads(path.read_text())


def load_small_model(folder: str | Path) -> FTTransformerClassifier:
    """Load any saved small model, choosing the class named in `small_model.json`."""
    classes = {"FTTransformerClassifier": FTTransformerClassifier}
    name = _read_meta(Path(folder))["class"]
    if name not in classes:
        raise ServalError(f"{folder} holds an unknown small model {name!r}; known: {sorted(classes)}")
    return classes[name].load(folder)


class BoostedTreesClassifier(BinaryClassifier, BaseEstimator):
    """Gradient-boosted trees on soft labels: each row counts as positive with weight y and negative with 1 - y.

    A fast baseline beside the FT-Transformer; it wraps `sklearn.ensemble.HistGradientBoostingClassifier` and
    cannot be saved (its trees would need pickling).

    Parameters
    ----------
    categorical : sequence of (column_index, cardinality) pairs
        Columns holding integer codes 0..cardinality-1, passed as `categorical_features`.
    max_iter, learning_rate : boosting settings.
    seed : int
        `random_state` of the booster.

    Attributes
    ----------
    n_features_in_ : int
    classes_ : ndarray of shape (2,)
        Always [0, 1].
    booster_ : HistGradientBoostingClassifier
        The fitted booster.

    Example
    -------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    >>> model = BoostedTreesClassifier(max_iter=20).fit(X, 0.1 + 0.8 * y)
    >>> bool((model.predict(X) == y).mean() > 0.9)
    True
    """

    _rules: dict[str, Rule] = {"max_iter": int_rule(1), "learning_rate": real_rule(1e-12, math.inf),
                               "seed": int_rule(0)}

    def __init__(self, categorical: Sequence[tuple[int, int]] = (), max_iter: int = 200, learning_rate: float = 0.1,
                 seed: int = 0) -> None:
        self.categorical = categorical
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, X: Any, y: Any) -> BoostedTreesClassifier:
        """Train on rows X (n, d) and soft labels y (n,) in [0, 1]; returns self."""
        check_params(self, self._rules)
        X = check_X(X, self.categorical)
        y = check_y(y, len(X))
        if (y == y[0]).all() and y[0] in (0, 1):
            raise ServalError(f"all {len(y)} labels are {y[0]:g}: boosting needs some weight on both classes")
        weights = np.concatenate([y, 1 - y])
        keep = weights > 0
        columns = [int(c) for c, _ in self.categorical] or None
        self.booster_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, categorical_features=columns,
            early_stopping=False, random_state=self.seed)
        self.booster_.fit(np.vstack([X, X])[keep], np.repeat([1, 0], len(y))[keep], sample_weight=weights[keep])
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of class 0 and class 1, shape (n, 2)."""
        check_is_fitted(self)
        return self.booster_.predict_proba(check_X(X, self.categorical, self.n_features_in_))

    def save(self, folder: str | Path) -> Path:
        raise NotImplementedError("BoostedTreesClassifier cannot be saved without pickling its trees; "
                                  "use FTTransformerClassifier for a model you want to save")

"""The small vertical model: learns gold and soft labels, resists noisy labels, is reproducible and saves safely."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from verticals.serval import small_model
from verticals.serval.small_model import BoostedTreesClassifier, FTTransformerClassifier, load_small_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # One OpenMP thread for the boosted trees too: on a busy 2-CPU machine their threads can spin for minutes.
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X, y.astype(float), test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def gold_model(breast_cancer):
    X_train, _, y_train, _ = breast_cancer
    return FTTransformerClassifier(noisy="none", epochs=8, batch_size=64, validation_fraction=0).fit(X_train, y_train)


@pytest.fixture(scope="module")
def small_task():
    return make_classification(n_samples=200, n_features=6, random_state=0)


def _tiny(**params) -> FTTransformerClassifier:
    """A model that runs two warm-up epochs and two DivideMix epochs in well under a second."""
    return FTTransformerClassifier(d_token=16, epochs=4, warmup_epochs=2, batch_size=64, **params)


def _flip(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Soft labels as a poor annotator gives them: a share `rate` flipped, then 0.7 / 0.3 with jitter."""
    rng = np.random.default_rng(seed)
    flipped = np.where(rng.random(len(y)) < rate, 1 - y, y)
    return np.clip(np.where(flipped == 1, 0.7, 0.3) + rng.normal(0, 0.1, len(y)), 0, 1)


def test_gold_labels_give_a_strong_model(gold_model, breast_cancer):
    _, X_test, _, y_test = breast_cancer
    proba = gold_model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.95
    assert set(gold_model.predict(X_test)) <= {0, 1}
    assert gold_model.n_epochs_ == gold_model.best_epoch_ == 8  # nothing held out: all epochs run, the last kept


def test_dividemix_beats_the_noisy_labels_it_learns_from():
    X, y = make_classification(n_samples=1000, n_features=8, n_informative=4, class_sep=1.5, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    soft = _flip(y_train, 0.3, seed=0)
    labels_auc = roc_auc_score(y_train, soft)
    assert 0.68 < labels_auc < 0.76
    model = FTTransformerClassifier(epochs=30, warmup_epochs=8, patience=8).fit(X_train, soft)
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    assert auc > labels_auc + 0.1  # measured: 0.93 against labels at 0.73
    # About 30% of labels are wrong, so the mixture should call most, but not all, rows clean.
    assert 0.5 < model.clean_fraction_ < 0.9
    mixed = [h for h in model.history_ if h["clean_fraction"] is not None]
    assert len(mixed) == model.n_epochs_ - 8 and model.best_epoch_ >= 8


def test_same_seed_same_model_other_seed_other_model(small_task):
    X, y = small_task
    before = torch.random.get_rng_state()
    first = _tiny(seed=3).fit(X, 0.2 + 0.6 * y).predict_proba(X)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    np.testing.assert_array_equal(first, _tiny(seed=3).fit(X, 0.2 + 0.6 * y).predict_proba(X))
    assert not np.allclose(first, _tiny(seed=4).fit(X, 0.2 + 0.6 * y).predict_proba(X))


def test_save_and_load_round_trip(gold_model, breast_cancer, tmp_path):
    _, X_test, _, _ = breast_cancer
    gold_model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "small_model.json"]
    meta = json.loads((tmp_path / "small_model.json").read_text())
    assert meta["class"] == "FTTransformerClassifier" and meta["params"]["noisy"] == "none"
    for loaded in (FTTransformerClassifier.load(tmp_path), load_small_model(tmp_path)):
        np.testing.assert_array_equal(loaded.predict_proba(X_test), gold_model.predict_proba(X_test))
        assert loaded.get_params() == gold_model.get_params()
        np.testing.assert_array_equal(loaded.feature_std_, gold_model.feature_std_)
        assert loaded.history_ == gold_model.history_


def test_save_and_load_keep_categorical_columns(tmp_path):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=60), rng.integers(0, 3, 60)])
    model = _tiny(categorical=[(1, 3)]).fit(X, (X[:, 1] == 2).astype(float))
    loaded = load_small_model(model.save(tmp_path))
    assert loaded.categorical == ((1, 3),)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_signal_only_in_a_categorical_column_is_learned():
    rng = np.random.default_rng(0)
    n = 600
    codes = rng.integers(0, 6, n)
    X = np.column_stack([rng.normal(size=(n, 3)), codes, rng.normal(size=n)])
    y = np.isin(codes, [1, 4]).astype(float)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    ft = FTTransformerClassifier(categorical=[(3, 6)], noisy="none", epochs=10, validation_fraction=0)
    assert roc_auc_score(y_test, ft.fit(X_train, 0.1 + 0.8 * y_train).predict_proba(X_test)[:, 1]) > 0.9
    trees = BoostedTreesClassifier(categorical=[(3, 6)], max_iter=30).fit(X_train, y_train)  # hard labels too
    assert roc_auc_score(y_test, trees.predict_proba(X_test)[:, 1]) > 0.9


@pytest.mark.parametrize(("X", "y", "params", "match"), [
    ([[np.nan, 1.0], [0.0, 1.0]], [0.0, 1.0], {}, "NaN or infinite"),
    ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.5], {}, r"in \[0, 1\]"),
    ([[0.0, 1.0], [1.0, 0.0]], [-0.1, 0.5], {}, r"in \[0, 1\]"),
    ([[0.0, 1.0], [1.0, 0.0]], [np.nan, 0.5], {}, "not finite"),
    ([[0.0, 1.0], [1.0, 0.0]], [[0.0], [1.0]], {}, "1-D array of 2 soft labels"),
    ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0, 1.0], {}, "1-D array of 2 soft labels"),
    ([0.0, 1.0], [0.0, 1.0], {}, "2-D array"),
    ([[0.0, 3.0], [1.0, 0.0]], [0.0, 1.0], {"categorical": [(1, 3)]}, r"codes 0\.\.2"),
    ([[0.0, 0.5], [1.0, 0.0]], [0.0, 1.0], {"categorical": [(1, 3)]}, r"codes 0\.\.2"),
    ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], {"categorical": [(2, 3)]}, "bad `categorical`"),
    ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], {"noisy": "coteach"}, "`noisy`"),
    ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], {"d_token": 12}, "`d_token`"),
])
def test_bad_input_is_refused(X, y, params, match):
    for model in (FTTransformerClassifier(**params), BoostedTreesClassifier(categorical=params.get("categorical", ()))):
        if set(params) - {"categorical"} and isinstance(model, BoostedTreesClassifier):
            continue
        with pytest.raises(ValueError, match=match):
            model.fit(np.asarray(X), np.asarray(y))


def test_predict_checks_its_input(gold_model, small_task):
    X, _ = small_task
    with pytest.raises(NotFittedError):
        FTTransformerClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="fitted with 30"):
        gold_model.predict_proba(X)


def test_estimator_contract(small_task):
    X, y = small_task
    model = _tiny(seed=5)
    assert model.get_params()["seed"] == 5 and not [k for k in vars(model) if k.endswith("_")]
    model.fit(X, y)
    assert model.history_[0].keys() == {"epoch", "train_loss", "val_loss", "val_auc", "clean_fraction"}
    assert not hasattr(clone(model), "module_")


def test_boosted_trees_learn_soft_labels(breast_cancer, tmp_path):
    X_train, X_test, y_train, y_test = breast_cancer
    model = BoostedTreesClassifier(max_iter=20).fit(X_train, 0.2 + 0.6 * y_train)
    assert roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]) > 0.9
    with pytest.raises(NotImplementedError, match="FTTransformerClassifier"):
        model.save(tmp_path)


def test_docstring_examples_run():
    assert doctest.testmod(small_model, optionflags=doctest.ELLIPSIS).failed == 0

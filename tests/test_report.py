"""bin/predict's output lines for numbers, with uncertain digits marked."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mnist_jax.inference.report import Result, csv_columns, csv_row, json_row, table_header, table_row

NUMBER = Result(Path("year.jpg"), [[(2, 0.99), (7, 0.01)], [(0, 0.6), (6, 0.4)], [(2, 0.97), (1, 0.02)]])


def test_a_number_lists_each_digit_and_names_the_uncertain_ones():
    assert table_header(8, number=True).split() == ["file", "number", "per-digit", "probability"]
    assert table_row(NUMBER, 8, number=True, min_confidence=0.9) == (
        "year.jpg  202       2 99.00%  0 60.00%  2 97.00%  uncertain: digit 2")
    assert not table_row(NUMBER, 8, number=True, min_confidence=0.5).endswith("digit 2")


def test_a_number_as_json_and_csv():
    row = json.loads(json_row(NUMBER, number=True, min_confidence=0.9))
    assert row["number"] == "202" and row["uncertain"] is True
    assert [d["uncertain"] for d in row["digits"]] == [False, True, False]
    assert row["digits"][1]["top_k"] == [{"class": "0", "label": 0, "probability": 0.6},
                                          {"class": "6", "label": 6, "probability": 0.4}]
    record = next(csv.reader(io.StringIO(csv_row(NUMBER, number=True, min_confidence=0.9))))
    assert dict(zip(csv_columns(number=True), record, strict=True)) == {
        "file": "year.jpg", "number": "202", "probabilities": "0.990000 0.600000 0.970000", "uncertain": "yes"}

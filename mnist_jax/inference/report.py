"""bin/predict's output lines: a table, JSON lines or CSV, for single digits or numbers.

A result is a file and one ranked list of (digit, probability) per digit read in it (one for a
single digit, several for a number). Every function here returns strings; the CLI prints them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

Ranked = list[tuple[int, float]]  # (digit, probability), most likely first


@dataclasses.dataclass(frozen=True)
class Result:
    file: Path | str | None  # None: an upload without a name
    digits: list[Ranked]  # one ranking per digit, left to right

    @property
    def text(self) -> str:
        return "".join(str(ranking[0][0]) for ranking in self.digits)

    def uncertain(self, min_confidence: float) -> list[int]:
        """Positions of the digits whose probability is under `min_confidence`."""
        return [i for i, ranking in enumerate(self.digits) if ranking[0][1] < min_confidence]


def _percent(probability: float) -> str:
    return f"{100 * probability:.2f}%"


def table_header(width: int, number: bool) -> str:
    if number:
        return f"{'file':<{width}}  {'number':<8}  per-digit probability"
    return f"{'file':<{width}}  digit  probability  runner-up"


def table_row(result: Result, width: int, number: bool, min_confidence: float) -> str:
    """One line of the table; `width` is that of the file column."""
    uncertain = result.uncertain(min_confidence)
    if number:
        digits = "  ".join(f"{r[0][0]} {_percent(r[0][1])}" for r in result.digits)
        note = f"  uncertain: digit {', '.join(str(i + 1) for i in uncertain)}" if uncertain else ""
        return f"{str(result.file):<{width}}  {result.text:<8}  {digits}{note}"
    (digit, probability), *rest = result.digits[0]
    runner_up = f"{rest[0][0]} {_percent(rest[0][1]):>7}" if rest else ""
    note = "  uncertain" if uncertain else ""
    return f"{str(result.file):<{width}}  {digit:>5}  {_percent(probability):>11}  {runner_up}{note}".rstrip()


def _ranking_json(ranking: Ranked) -> list[dict]:
    return [{"digit": digit, "probability": round(probability, 6)} for digit, probability in ranking]


def json_fields(result: Result, number: bool, min_confidence: float) -> dict:
    """The JSON object of one result: file, digit, probability, uncertain and top_k; for a number, the
    number and the same fields per digit under "digits"."""
    uncertain = result.uncertain(min_confidence)
    file = None if result.file is None else str(result.file)
    if number:
        digits = [{"digit": r[0][0], "probability": round(r[0][1], 6), "uncertain": i in uncertain,
                   "top_k": _ranking_json(r)} for i, r in enumerate(result.digits)]
        return {"file": file, "number": result.text, "uncertain": bool(uncertain), "digits": digits}
    ranking = result.digits[0]
    return {"file": file, "digit": ranking[0][0], "probability": round(ranking[0][1], 6),
            "uncertain": bool(uncertain), "top_k": _ranking_json(ranking)}


def json_row(result: Result, number: bool, min_confidence: float) -> str:
    """`json_fields` as one line of JSON."""
    return json.dumps(json_fields(result, number, min_confidence))


CSV_COLUMNS = ("file", "digit", "probability", "runner_up", "runner_up_probability", "uncertain")
CSV_NUMBER_COLUMNS = ("file", "number", "probabilities", "uncertain")


def csv_line(values: tuple | list) -> str:
    """One CSV record (quoted where needed), without the line end."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def csv_row(result: Result, number: bool, min_confidence: float) -> str:
    uncertain = "yes" if result.uncertain(min_confidence) else "no"
    if number:
        probabilities = " ".join(f"{r[0][1]:.6f}" for r in result.digits)
        return csv_line((result.file, result.text, probabilities, uncertain))
    (digit, probability), *rest = result.digits[0]
    runner_up = rest[0] if rest else ("", 0.0)
    return csv_line((result.file, digit, f"{probability:.6f}", runner_up[0], f"{runner_up[1]:.6f}", uncertain))

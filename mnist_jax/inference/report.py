"""bin/predict's output lines: a table, JSON lines or CSV, for single images or rows of characters.

A result is a file and one ranked list of (label, probability) per character read in it (one for a
single digit, letter or item; several for a number), named by the model's classes. Every function
here returns strings; the CLI prints them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

from mnist_jax.data.catalog import DIGITS

Ranked = list[tuple[int, float]]  # (label, probability), most likely first (see `ranking.top_k`)


@dataclasses.dataclass(frozen=True)
class Result:
    file: Path | str | None  # None: an upload without a name
    digits: list[Ranked]  # one ranking per character (digit, letter, item) read, left to right
    classes: tuple[str, ...] = DIGITS  # label i's name (`inference.model.ModelInfo.classes`)

    def name(self, label: int) -> str:
        return self.classes[label]

    @property
    def text(self) -> str:
        """The top class of each character, joined (by spaces when a class name is longer than one letter)."""
        names = [self.name(ranking[0][0]) for ranking in self.digits]
        return ("" if all(len(name) == 1 for name in names) else " ").join(names)

    @property
    def noun(self) -> str:
        """What one class is called in the output: "digit" for the ten digits, else "class"."""
        return "digit" if self.classes == DIGITS else "class"

    @property
    def part(self) -> str:
        """What one of a row's parts is called: "digit" for the ten digits, else "character"."""
        return "digit" if self.classes == DIGITS else "character"

    def uncertain(self, min_confidence: float) -> list[int]:
        """Positions of the characters whose probability is under `min_confidence`."""
        return [i for i, ranking in enumerate(self.digits) if ranking[0][1] < min_confidence]


def _percent(probability: float) -> str:
    return f"{100 * probability:.2f}%"


def name_width(classes: tuple[str, ...]) -> int:
    """The width of the table's class column: its header ("digit" or "class") or the longest name."""
    return max(5, *map(len, classes))


def table_header(width: int, number: bool, classes: tuple[str, ...] = DIGITS) -> str:
    names = Result(None, [], classes)
    if number:
        return f"{'file':<{width}}  {'number':<8}  per-{names.part} probability"
    noun = names.noun
    return f"{'file':<{width}}  {noun:>{name_width(classes)}}  probability  runner-up"


def table_row(result: Result, width: int, number: bool, min_confidence: float) -> str:
    """One line of the table; `width` is that of the file column."""
    uncertain = result.uncertain(min_confidence)
    if number:
        characters = "  ".join(f"{result.name(r[0][0])} {_percent(r[0][1])}" for r in result.digits)
        note = f"  uncertain: {result.part} {', '.join(str(i + 1) for i in uncertain)}" if uncertain else ""
        return f"{str(result.file):<{width}}  {result.text:<8}  {characters}{note}"
    (label, probability), *rest = result.digits[0]
    runner_up = f"{result.name(rest[0][0])} {_percent(rest[0][1]):>7}" if rest else ""
    note = "  uncertain" if uncertain else ""
    name = f"{result.name(label):>{name_width(result.classes)}}"
    return f"{str(result.file):<{width}}  {name}  {_percent(probability):>11}  {runner_up}{note}".rstrip()


def _ranking_json(result: Result, ranking: Ranked) -> list[dict]:
    return [{"class": result.name(label), "label": label, "probability": round(probability, 6)}
            for label, probability in ranking]


def json_fields(result: Result, number: bool, min_confidence: float) -> dict:
    """The JSON object of one result: file, class (its name), label (its index), probability, uncertain and
    top_k; for a number (a row of characters), its text as "number" and the same fields per character under
    "digits"."""
    uncertain = result.uncertain(min_confidence)
    file = None if result.file is None else str(result.file)

    def fields(ranking: Ranked) -> dict:
        label, probability = ranking[0]
        return {"class": result.name(label), "label": label, "probability": round(probability, 6)}

    if number:
        digits = [{**fields(r), "uncertain": i in uncertain, "top_k": _ranking_json(result, r)}
                  for i, r in enumerate(result.digits)]
        return {"file": file, "number": result.text, "uncertain": bool(uncertain), "digits": digits}
    ranking = result.digits[0]
    return {"file": file, **fields(ranking), "uncertain": bool(uncertain), "top_k": _ranking_json(result, ranking)}


def json_row(result: Result, number: bool, min_confidence: float) -> str:
    """`json_fields` as one line of JSON."""
    return json.dumps(json_fields(result, number, min_confidence))


def csv_columns(number: bool, classes: tuple[str, ...] = DIGITS) -> tuple[str, ...]:
    """The CSV header: the class column is called "digit" for the ten digits, else "class"."""
    if number:
        return ("file", "number", "probabilities", "uncertain")
    return ("file", Result(None, [], classes).noun, "probability", "runner_up", "runner_up_probability", "uncertain")


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
    (label, probability), *rest = result.digits[0]
    runner_up = (result.name(rest[0][0]), rest[0][1]) if rest else ("", 0.0)
    return csv_line((result.file, result.name(label), f"{probability:.6f}", runner_up[0], f"{runner_up[1]:.6f}",
                     uncertain))

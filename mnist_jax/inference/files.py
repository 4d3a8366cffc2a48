"""Users' image files: which ones a command line names (files, directories, glob patterns), and how large."""

from __future__ import annotations

import glob
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_PIXELS = 50_000_000  # larger images are refused rather than decoded


def _images_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def expand_inputs(arguments: list[str]) -> tuple[list[Path], list[str]]:
    """Returns (image files in command-line order without repeats, one error line per unusable argument).

    A directory gives the files under it with an image suffix (IMAGE_SUFFIXES, any case), sorted;
    a pattern with *, ? or [ that names no existing file is expanded (** spans directories); any
    other argument is taken as a file, whatever its name (a missing one fails when it is read).
    """
    files: dict[Path, None] = {}
    errors = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _images_under(path)
            if not found:
                errors.append(f"{argument}: directory holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif not path.exists() and any(char in argument for char in "*?["):
            matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]
            found = [file for match in matches for file in (_images_under(match) if match.is_dir() else [match])]
            if not found:
                errors.append(f"{argument}: no file matches this pattern")
        else:
            found = [path]
        files.update(dict.fromkeys(found))
    return list(files), errors

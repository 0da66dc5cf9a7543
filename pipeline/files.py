"""Reading the files people write by hand: rule sets and experiments, in TOML or YAML.

One reader, so that every such file fails with the same words: a bad suffix, an unreadable
file, or a parser's complaint with its line and column. Callers wrap :class:`FileProblem` in
their own error (``RulesError``, ``ExperimentError``), which names the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".toml")
"""The suffixes :func:`read_document` reads, YAML first (the form the examples use)."""


class FileProblem(ValueError):
    """A hand-written file that cannot be read or parsed.

    Attributes:
        problem: One ``"<file>: message"`` line, in the form the callers' errors list fields.
    """

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


def read_document(path: Path) -> Any:
    """The parsed content of a ``.yaml``/``.yml`` or ``.toml`` file.

    Args:
        path: The file; its suffix picks the parser.

    Returns:
        What the parser returned (usually a mapping; the caller checks); an empty YAML file
        reads as an empty mapping.

    Raises:
        FileProblem: If the suffix is unknown, the file cannot be read as UTF-8, or the parser
            rejects it (with the line and column where YAML says).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise FileProblem(f"<file>: unsupported suffix {suffix!r}; use .yaml or .toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"<file>: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileProblem(f"<file>: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise FileProblem(f"<file>: not valid YAML: {problem}{where}") from None
    return {} if data is None else data

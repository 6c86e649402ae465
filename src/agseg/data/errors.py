"""Errors raised on bad input data.

Every problem with a user's files (unreadable, truncated, mismatched, out-of-range) raises :class:`DataError`, whose
message starts with the offending file, so that a user can find and fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """A problem with an input file: the message names the file and the problem.

    Args:
        path: The file (or folder) at fault.
        problem: What is wrong with it, in words.
        case_id: The case the file belongs to, when known.

    Example:
        >>> str(DataError("/d/a.png", "cannot read: not a PNG file"))
        '/d/a.png: cannot read: not a PNG file'
    """

    def __init__(self, path: str | Path, problem: str | None = None, case_id: str | None = None) -> None:
        if problem is None:  # DataError(message): how torch's DataLoader re-raises a worker's error
            path, problem = "", str(path)
        self.path = str(path)
        self.problem = problem
        self.case_id = case_id
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # picklable across DataLoader workers
        return (self.__class__, (self.path, self.problem, self.case_id))


@dataclass(frozen=True)
class SkippedCase:
    """A case left out with ``skip_bad=True``: which, where, and why."""

    case_id: str
    path: str
    problem: str

    @classmethod
    def from_error(cls, err: DataError, case_id: str | None = None) -> SkippedCase:
        return cls(case_id=case_id or err.case_id or "?", path=err.path, problem=err.problem)

    def to_dict(self) -> dict[str, str]:
        return {"case_id": self.case_id, "path": self.path, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.case_id}: {self.path}: {self.problem}"

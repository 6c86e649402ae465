"""Image-level classes for any layout: the ``class_pattern`` option (a regex on the case id) and class names.

``class_pattern`` (an option of every layout, :data:`~agseg.data.layouts.registry.COMMON_OPTIONS`) gives each case
without a class its :attr:`~agseg.data.cases.CaseRef.target` from its id: the first group of the regex that
matched (searched, not anchored), or the whole match without a group. A number is the class value; any other text is
a class name, looked up (case-insensitive) in the ``labels`` option (``{0: normal, 1: tuberculosis}``). A case id
that does not match, or names an unknown class, is a problem naming its file. The chest X-rays of ``cxr_lungs``
(``CHNCXR_0001_0``, ``MCUCXR_0104_1``) take ``class_pattern: '_(\\d)$'``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from agseg.data.cases import CaseRef
from agseg.data.errors import DataError

__all__ = ["apply_class_pattern", "class_value"]


def class_value(text: str, labels: Mapping[int, str] | None) -> int:
    """A class given as text -> its value: an integer as it is, else a name of ``labels`` (case-insensitive).

    Raises:
        ValueError: a negative number, or a name that ``labels`` does not hold (the message lists the names).
    """
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t)
    names = {str(n).lower(): int(v) for v, n in (labels or {}).items()}
    if t.lower() in names:
        return names[t.lower()]
    known = ", ".join(f"{v}: {n}" for v, n in (labels or {}).items()) or "none declared (set labels)"
    raise ValueError(f"class {t!r} is neither a number nor a class name (classes: {known})")


def apply_class_pattern(
    cases: Sequence[CaseRef], pattern: str, labels: Mapping[int, str] | None
) -> tuple[list[CaseRef], list[DataError]]:
    """``cases`` with the classes ``pattern`` reads from their ids (cases that have a class keep it), and the
    problems: ids that do not match, classes that are unknown."""
    rx = re.compile(pattern)
    out, problems = [], []
    for c in cases:
        if c.target is not None:
            out.append(c)
            continue
        m = rx.search(c.case_id)
        if m is None:
            problems.append(DataError(c.image_paths[0], f"case id {c.case_id!r} does not match class_pattern "
                                                        f"'{pattern}'", c.case_id))  # fmt: skip
            continue
        try:
            value = class_value(next((g for g in m.groups() if g is not None), m.group(0)), labels)
        except ValueError as err:
            problems.append(DataError(c.image_paths[0], f"class_pattern '{pattern}': {err}", c.case_id))
            continue
        out.append(dataclasses.replace(c, target=value))
    return out, problems

"""The one exception type for bad input, so a batch job can report a case and go on with the others."""

from __future__ import annotations

import os
from collections.abc import Mapping


class InputError(ValueError):
    """A problem with one input file or datalist entry.

    The message always starts with the file (or case) it is about, then says what is wrong, e.g.
    ``"/data/case_007.nii.gz: 4 spatial dimensions, expected a 3-D volume"``.
    """

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = str(source) if source is not None else "<input>"
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def find_input_error(error: BaseException) -> InputError | None:
    """Return the :class:`InputError` behind ``error``.

    MONAI's ``Compose`` re-raises a transform's exception as ``RuntimeError("applying transform ...")``; the
    user should see the original message, so walk the ``__cause__`` / ``__context__`` chain.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def check_state_dict(source: str | os.PathLike, found: Mapping[str, object], expected: Mapping[str, object],
                     what: str) -> None:
    """Raise :class:`InputError` naming ``source`` when the tensors ``found`` in a weight file are not those a
    ``what`` of this architecture has (``expected``: its ``state_dict()``): missing or unexpected names, or
    another shape, e.g. weights of a model with other widths."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise InputError(source, f"weights of another architecture: they do not fit this {what} ({len(missing)} "
                                 f"tensors missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
                                 f"{unexpected[:3]})")
    wrong = [(name, tuple(found[name].shape), tuple(expected[name].shape)) for name in sorted(expected)
             if tuple(found[name].shape) != tuple(expected[name].shape)]
    if wrong:
        name, stored, needed = wrong[0]
        raise InputError(source, f"weights of another architecture: {len(wrong)} tensors have other shapes than "
                                 f"this {what} needs, e.g. {name} is {stored} in the file, {needed} here")

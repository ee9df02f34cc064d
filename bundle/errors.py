"""The one exception type for bad input, so a batch job can report a case and go on with the others."""

from __future__ import annotations

import os
import re
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


class OutputError(OSError):
    """An output that cannot be written: the folder is not writable, the disk is full, too little space is left.

    The message starts with the path it is about, e.g. ``"/out/case_synthetic.nii.gz: could not be written
    (OSError: [Errno 28] No space left on device)"``.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions behind it (``__cause__``, else ``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def find_input_error(error: BaseException) -> InputError | None:
    """Return the :class:`InputError` behind ``error``.

    MONAI's ``Compose`` re-raises a transform's exception as ``RuntimeError("applying transform ...")``; the
    user should see the original message, so walk the ``__cause__`` / ``__context__`` chain.
    """
    return next((e for e in _chain(error) if isinstance(e, InputError)), None)


_APPLYING = re.compile(r"applying transform <([\w.]+) object at 0x[0-9a-fA-F]+>")


def describe_failure(error: BaseException, source: str | os.PathLike | None = None) -> str:
    """The message a user sees for a failed case: the :class:`InputError` or :class:`OutputError` behind
    ``error`` as it is (it starts with its file), else ``"<source>: <type>: <message> (in <transform class>)"``
    for the original exception behind MONAI's ``"applying transform <... object at 0x...>"`` wrappers."""
    chain = _chain(error)
    named = next((e for e in chain if isinstance(e, (InputError, OutputError))), None)
    if named is not None:
        return str(named)
    transforms = [m.group(1).rsplit(".", 1)[-1] for e in chain for m in [_APPLYING.search(str(e))] if m]
    root = next((e for e in chain if not _APPLYING.search(str(e))), chain[-1])
    where = f" (in {transforms[-1]})" if transforms else ""
    return f"{'' if source is None else f'{source}: '}{type(root).__name__}: {root}{where}"


def check_state_dict(
    source: str | os.PathLike, found: Mapping[str, object], expected: Mapping[str, object], what: str
) -> None:
    """Raise :class:`InputError` naming ``source`` when the tensors ``found`` in a weight file are not those a
    ``what`` of this architecture has (``expected``: its ``state_dict()``): missing or unexpected names, or
    another shape, e.g. weights of a model with other widths."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise InputError(
            source,
            f"weights of another architecture: they do not fit this {what} ({len(missing)} "
            f"tensors missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]})",
        )
    wrong = [
        (name, tuple(found[name].shape), tuple(expected[name].shape))
        for name in sorted(expected)
        if tuple(found[name].shape) != tuple(expected[name].shape)
    ]
    if wrong:
        name, stored, needed = wrong[0]
        raise InputError(
            source,
            f"weights of another architecture: {len(wrong)} tensors have other shapes than "
            f"this {what} needs, e.g. {name} is {stored} in the file, {needed} here",
        )

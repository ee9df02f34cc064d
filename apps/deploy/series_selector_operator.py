"""The App SDK's series selector with this app's rules (selection_rules.py) and its refusals reported as the bundle's
input error."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.core import Fragment
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from selection_rules import SELECTION_RULES

from bundle.errors import InputError


class SeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """:class:`DICOMSeriesSelectorOperator` with :data:`SELECTION_RULES`. The SDK refuses a series it cannot judge
    (its orientation rule needs PatientPosition, e.g. ``HFS``) by ``NotImplementedError``; that becomes an
    :class:`InputError` naming ``input_folder``, so the run ends with one clear line."""

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs) -> None:
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, rules=SELECTION_RULES, **kwargs)

    def filter(self, *args, **kwargs):
        try:
            return super().filter(*args, **kwargs)
        except NotImplementedError as error:
            raise InputError(
                self.input_folder, f"a series cannot be matched to the selection rules: {error}"
            ) from error

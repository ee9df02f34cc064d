"""What a derived (synthetic) DICOM instance carries: no real identity unless asked, and machine-readable marks
that it is synthetic and where it comes from.

De-identification follows the DICOM PS3.15 Basic Application Level Confidentiality Profile (Annex E, table E.1-1
of the 2026c edition) as implemented by ``dicom-anonymizer``: names, IDs, dates, free-text descriptions and
private tags are removed or replaced, UIDs are replaced by new ones that stay consistent within a run (so the
references to the originals still link the derived instances to each other and to one pseudonymous source
series). The patient gets a pseudonymous ID that is the same for every case of that patient within a run, so
patient-level splits still work; the real -> pseudonym mapping goes only to the provenance record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime

import pydicom
from dicomanonymizer import anonymize_dataset
from dicomanonymizer.simpledicomanonymizer import get_UID, initialize_actions
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from bundle.errors import InputError

SYNTHETIC_DESCRIPTION = "SYNTHETIC lesion (MedSoft-Diffusion)"
SERIES_DESCRIPTION_LENGTH = 64
SERIES_NUMBER_OFFSET = 1000  # the derived series' number: the source's + 1000, as scanners number derived series
PSEUDONYM_PREFIX = "SYN"
PROFILE_TABLES = "dicomfields_2026c"
DEIDENTIFICATION_METHOD = "PS3.15 basic profile (dicom-anonymizer, E.1-1 2026c), pseudonym"  # LO: 64
_DUMMY_DATES = ("00010101", "00010101010101.000000+0000", "000000.00")
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
# CID 7203 Image Derivation: the acquired volume with a region's voxels replaced, everything else kept. "Volume
# editing" is that operation; reformatting (113072), projections, filters and pixel arithmetic between source
# images describe other derivations.
DERIVATION = codes.cid7203.VolumeEditing
# CID 7202 Source Image Purposes of Reference
SOURCE_PURPOSE = codes.cid7202.SourceImageForImageProcessingOperation


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _removing_sequences(action: Callable[[Dataset, tuple], None]) -> Callable[[Dataset, tuple], None]:
    """A profile action that removes a sequence instead (X; the library would empty or replace every value in
    it, SOP Class UIDs and Type 1 references included) and applies ``action`` to any other element."""

    def apply(dataset: Dataset, tag: tuple) -> None:
        element = dataset.get(tag)
        if element is not None and element.VR == "SQ":
            del dataset[tag]
        else:
            action(dataset, tag)

    return apply


def _clear_dummy_dates(dataset: Dataset) -> None:
    """Empty the library's dummy dates and times (``00010101``...), which validators reject: the profile's Z."""

    def clear(_: Dataset, element: pydicom.DataElement) -> None:
        if element.VR in ("DA", "DT", "TM") and str(element.value) in _DUMMY_DATES:
            element.value = ""

    dataset.walk(clear)


class Deidentifier:
    """De-identify derived instances (PS3.15 basic profile) with pseudonymous patient IDs stable for its lifetime.

    Args:
        key: the secret that turns real patient IDs into pseudonyms (HMAC-SHA256); random by default, so the same
            patient gets the same pseudonym within one run (one writer) and another one in the next run.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)
        self.rules = {tag: _removing_sequences(action) for tag, action in initialize_actions(PROFILE_TABLES).items()}

    def pseudonym(self, patient: str) -> str:
        """The pseudonymous patient ID of a real one (or of a source without one)."""
        return (
            PSEUDONYM_PREFIX
            + hmac.new(self.key, patient.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16].upper()
        )

    def uid(self, uid: str) -> str:
        """The UID a real one is replaced by (the same in every instance of the run)."""
        return get_UID(uid) if uid else uid

    def __call__(self, dataset: Dataset, pseudonym: str) -> None:
        """De-identify ``dataset`` in place and give it the patient ``pseudonym`` as ID and name."""
        anonymize_dataset(dataset, base_rules_gen=lambda: dict(self.rules), delete_private_tags=True)
        _clear_dummy_dates(dataset)
        dataset.PatientID = pseudonym
        dataset.PatientName = f"SYNTHETIC^{pseudonym}"
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD
        dataset.DeidentificationMethodCodeSequence = Sequence([_code_item(*BASIC_PROFILE)])


def patient_key(dataset: Dataset, source: str) -> str:
    """What identifies a source's patient: its PatientID, else (an anonymous source) the source itself."""
    return str(dataset.get("PatientID") or "") or f"no PatientID: {source}"


def check_deidentifiable(path: str, dataset: Dataset) -> None:
    """Refuse to de-identify an instance whose pixels may show identity (``BurnedInAnnotation`` YES)."""
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        raise InputError(
            path,
            "BurnedInAnnotation is YES: text burned into the pixels may identify the patient and "
            "the header-only de-identification cannot remove it; set keep_patient_identity to "
            "write it with identity, or remove the annotation first",
        )


def source_reference(dataset: Dataset) -> dict[str, str]:
    """The UIDs that reference a source instance (from the file meta when the dataset leaves them empty)."""
    meta = dataset.file_meta
    return {
        "sop_class": str(dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID", "")),
        "sop_instance": str(dataset.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID", "")),
        "series": str(dataset.get("SeriesInstanceUID") or ""),
        "study": str(dataset.get("StudyInstanceUID") or ""),
    }


def reference_source(dataset: Dataset, source: dict[str, str]) -> None:
    """Point ``dataset`` at its source instance: ``SourceImageSequence`` (purpose: source image for image
    processing) and, as the source is in another study, the Common Instance Reference module's
    ``StudiesContainingOtherReferencedInstancesSequence`` > ``ReferencedSeriesSequence``."""
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source["sop_class"], source["sop_instance"]
    item.PurposeOfReferenceCodeSequence = Sequence(
        [_code_item(SOURCE_PURPOSE.value, SOURCE_PURPOSE.scheme_designator, SOURCE_PURPOSE.meaning)]
    )
    dataset.SourceImageSequence = Sequence([item])
    if "ReferencedSeriesSequence" in dataset:
        del dataset.ReferencedSeriesSequence
    if source["series"] and source["study"]:
        instance = Dataset()
        instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = source["sop_class"], source["sop_instance"]
        series = Dataset()
        series.SeriesInstanceUID = source["series"]
        series.ReferencedInstanceSequence = Sequence([instance])
        study = Dataset()
        study.StudyInstanceUID = source["study"]
        study.ReferencedSeriesSequence = Sequence([series])
        dataset.StudiesContainingOtherReferencedInstancesSequence = Sequence([study])


def mark_synthetic(dataset: Dataset, text: str, series_description: str, series_number: int, created: datetime) -> None:
    """Mark a derived instance as synthetic, machine-readably: ``ImageType`` DERIVED\\SECONDARY, ``SeriesDescription``
    and ``ImageComments`` starting with ``SYNTHETIC``, ``DerivationDescription`` with the lesion text, a
    ``DerivationCodeSequence`` (DCM 113077 Volume editing), ``BurnedInAnnotation`` NO (nothing is drawn into the
    pixels), a new ``SeriesNumber`` and the creation, series and content date and time."""
    dataset.ImageType = ["DERIVED", "SECONDARY", *list(dataset.get("ImageType", []))[2:]]
    dataset.SeriesDescription = f"SYNTHETIC {series_description}".strip()[:SERIES_DESCRIPTION_LENGTH]
    dataset.ImageComments = (
        f"{SYNTHETIC_DESCRIPTION}: not acquired; a generated lesion was inserted into this image. Lesion text: {text}"
    )[:10240]
    dataset.DerivationDescription = f"{SYNTHETIC_DESCRIPTION}: {text}"[:1024]
    dataset.DerivationCodeSequence = Sequence(
        [_code_item(DERIVATION.value, DERIVATION.scheme_designator, DERIVATION.meaning)]
    )
    dataset.BurnedInAnnotation = "NO"
    dataset.SeriesNumber = series_number
    date, time = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    dataset.InstanceCreationDate = dataset.SeriesDate = dataset.ContentDate = date
    dataset.InstanceCreationTime = dataset.SeriesTime = dataset.ContentTime = time


def derived_series_number(dataset: Dataset) -> int:
    """The derived series' number: the source's plus :data:`SERIES_NUMBER_OFFSET`."""
    try:
        return int(dataset.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    except (TypeError, ValueError):
        return SERIES_NUMBER_OFFSET


def new_instance_uids(dataset: Dataset, study: str, series: str) -> None:
    """Give a derived instance its new study, series and SOP instance UIDs (file meta included)."""
    dataset.SOPClassUID = source_reference(dataset)["sop_class"]
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID

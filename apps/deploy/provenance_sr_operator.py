"""The provenance of a synthetic series as a DICOM Enhanced SR (highdicom) in the synthetic series' own study, so a
PACS keeps what made it (algorithm, version, lesion text, seed, mask source, sampler settings) next to the images."""

from __future__ import annotations

import copy
import io
import json
import logging
from datetime import datetime

import highdicom
import pydicom
from monai.deploy.core import Operator, OperatorSpec
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from bundle.io.synthetic_dicom import SYNTHETIC_DESCRIPTION
from bundle.serving import Synthesis
from bundle.utils.files import write_atomically

logger = logging.getLogger(__name__)

# the record's entries that describe how the series was made (the rest: paths, hashes, de-identification map)
PARAMETERS = (
    "seed",
    "seed_rule",
    "mask_source",
    "sampler",
    "num_inference_steps",
    "guidance_scale",
    "eta",
    "msc_scale",
    "precision",
    "spatial_size",
    "slices_per_case",
)
MANUFACTURER = "MedSoft-Diffusion bundle"
# Type 2 attributes of the Patient and General Study modules that highdicom copies from the evidence: present, maybe
# empty (a source without them gives a derived series without them)
PATIENT_STUDY_TYPE2 = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime")


def provenance_sr(record: dict, series: list[Dataset]) -> Dataset:
    """An Enhanced SR (root: DCM 110001 Image Processing) of a synthesis ``record`` (the bundle's provenance JSON)
    about the derived ``series`` (its instances, pixels not needed): algorithm name (DCM 111001) and version (DCM
    111003), the lesion text as the derivation (DCM 121401), the parameters (DCM 111002, JSON) and the time of
    processing (DCM 111702). Patient and study come from the derived series (de-identified unless it kept identity).
    """
    items = [
        highdicom.sr.TextContentItem(codes.DCM.AlgorithmName, record.get("model", "MedSoft-Diffusion"), "CONTAINS"),
        highdicom.sr.TextContentItem(
            codes.DCM.AlgorithmVersion, str(record.get("code_version", {}).get("bundle", "unknown")), "CONTAINS"
        ),
        highdicom.sr.TextContentItem(codes.DCM.Derivation, f"{SYNTHETIC_DESCRIPTION}: {record['text']}", "CONTAINS"),
        highdicom.sr.TextContentItem(
            codes.DCM.AlgorithmParameters,
            json.dumps({key: record[key] for key in PARAMETERS if key in record}, sort_keys=True),
            "CONTAINS",
        ),
        highdicom.sr.DateTimeContentItem(
            codes.DCM.DatetimeOfProcessing, datetime.fromisoformat(record["created_utc"]), "CONTAINS"
        ),
    ]
    root = highdicom.sr.ContainerContentItem(codes.DCM.ImageProcessing)
    root.ContentSequence = highdicom.sr.ContentSequence(items)
    first = copy.deepcopy(min(series, key=lambda d: int(d.get("InstanceNumber") or 0)))
    for keyword in PATIENT_STUDY_TYPE2:
        if keyword not in first:
            setattr(first, keyword, "")
    report = highdicom.sr.EnhancedSR(
        evidence=[first, *(d for d in series if d.SOPInstanceUID != first.SOPInstanceUID)],
        content=root,
        series_instance_uid=generate_uid(),
        series_number=int(first.SeriesNumber) + 1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"SYNTHETIC provenance: {first.get('SeriesDescription', '')}"[:64],
    )
    return report


class ProvenanceSROperator(Operator):
    """Write the provenance of the synthesis it receives as ``<series folder>_provenance_sr.dcm`` beside the series.

    Named input:
        synthesis: the :class:`bundle.serving.Synthesis` of the lesion-synthesis operator.
    """

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("synthesis")

    def compute(self, op_input, op_output, context) -> None:
        synthesis: Synthesis = op_input.receive("synthesis")
        series = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(synthesis.volume.iterdir())]
        report = provenance_sr(synthesis.record, series)
        target = synthesis.volume.with_name(f"{synthesis.volume.name}_provenance_sr.dcm")
        encoded = io.BytesIO()
        report.save_as(encoded, enforce_file_format=True)
        write_atomically(target, encoded.getvalue())
        logger.info("provenance SR -> %s", target)

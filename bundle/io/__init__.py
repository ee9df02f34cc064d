"""Writing results: synthetic volumes back into the input's format and geometry (NIfTI, a new DICOM series marked
synthetic and de-identified, other ITK formats), their provenance records and PNG previews; MedDiff-FT's image-mask
pairs (the volume plus its lesion label) and their datalist."""

from bundle.io.pair_writer import LesionPairWriter, pair_entry, write_pair_datalist
from bundle.io.preview import render_preview
from bundle.io.provenance import provenance_record
from bundle.io.synthetic_dicom import Deidentifier
from bundle.io.volume_writer import SyntheticVolumeWriter

__all__ = [
    "Deidentifier",
    "LesionPairWriter",
    "SyntheticVolumeWriter",
    "pair_entry",
    "provenance_record",
    "render_preview",
    "write_pair_datalist",
]

"""Where the bundle, its configs and the real scans in ``../shared/data`` are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"

SCT_T2 = SHARED_DATA / "sct_t2" / "t2.nii.gz"
SCT_LEVELS = SHARED_DATA / "sct_t2" / "t2_seg-manual_labeled.nii.gz"
TOTALSEG_MR = SHARED_DATA / "totalseg" / "mr" / "example_mr_sm.nii.gz"
TOTALSEG_MR_SEG = SHARED_DATA / "totalseg" / "mr" / "example_seg_mr.nii.gz"
CT_DICOM = SHARED_DATA / "totalseg" / "ct_dicom"
CT_DICOM_SEG = SHARED_DATA / "totalseg" / "ct_dicom_seg.nii.gz"
T12_LABEL = 32  # TotalSegmentator v2 numbering; the 20-slice CT series covers T11-T12
MR_VERTEBRAE_LABEL = 19

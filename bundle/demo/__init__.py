"""The demo data: a procedural sagittal T1-weighted lumbar-spine MRI phantom with at most one vertebral-body lesion
per case.

This is the bundle's demo and benchmark data: no patient data, fully determined by ``(seed, case index)``.

Geometry of every case::

    array shape  (160, 184, n_slices), n_slices in {11, 12, 13}   (at most 382,720 voxels)
    axis 0       anterior -> posterior, 1.00-1.08 mm               NIfTI axis code 'P'
    axis 1       superior -> inferior,  1.20-1.28 mm               NIfTI axis code 'I'
    axis 2       left -> right, one sagittal slice per index, 3.5-4.0 mm thick   NIfTI axis code 'R'

The affine adds a random oblique rotation (up to 6 degrees in the sagittal plane, 3 degrees off it) and a
scanner-like origin; qform and sform are both set (code 1, scanner). ``image[:, :, k].T`` displays slice
``k`` the radiological way: anterior on the left, superior at the top.

Anatomy (random per case): T12 (partly), L1-L5, S1 and the upper sacrum on a lordotic curve; vertebral bodies
with a dark cortical rim, concave endplates, a waist and a kidney-shaped cross-section (narrower laterally,
35-48 mm wide), textured fatty marrow; wedge-shaped discs (annulus darker than nucleus, sometimes one
degenerated lower disc); pedicles, laminae, articular pillars and spinous processes; the bony canal with
epidural fat, the CSF-filled thecal sac with the conus medullaris, neural foramina with exiting roots;
psoas, paraspinal muscle with fatty streaks, subcutaneous fat, skin and air; retroperitoneal fat, bowel,
aorta (flow void) and IVC. The image then gets a small in-plane blur, a multiplicative bias field that is
brightest near the posterior (spine) coil, and Rician noise.

Vertebra labels follow TotalSegmentator v2 (:data:`VERTEBRA_LABELS`, plus :data:`NEIGHBOUR_BONE_LABELS` for
the partial T12 and the sacrum below S1). A lesion case has one lesion in the marrow of one L1-L5 vertebral
body; the lesion mask is the voxels where the lesion's weight is at least one half (always inside that body's
marrow, so inside its label). Benign (haemangioma): round/oval, sharp margin, hyperintense, often coarse
vertical striations. Malignant (metastasis / myeloma): irregular, ill-defined margin, hypointense, sometimes
anterior wedge height loss and/or a convex posterior cortical bulge. Normal cases have an empty lesion mask
and a random target level. Incidental findings (small fatty marrow islands, Modic endplate changes) appear
only in vertebrae other than the described level, so the description stays true.

Random streams: each case draws from ``np.random.SeedSequence([seed, case_index])`` split into independent
streams (acquisition, anatomy, lesion, incidental findings, noise, text), so case k is the same whatever the
number of cases, and a normal and a lesion case with the same seed and index share their anatomy.
"""

from bundle.demo.cases import PhantomCase, generate_case
from bundle.demo.dataset import (
    DEFAULT_CLASS_FRACTIONS,
    assign_classes,
    class_counts,
    generate_dataset,
    stratified_split,
)
from bundle.demo.labels import LESION_CLASSES, NEIGHBOUR_BONE_LABELS, VERTEBRA_LABELS
from bundle.demo.lesion_text import describe_case
from bundle.demo.lesions import LesionAttributes
from bundle.demo.overview_figure import write_overview_figure

__all__ = [
    "DEFAULT_CLASS_FRACTIONS",
    "LESION_CLASSES",
    "NEIGHBOUR_BONE_LABELS",
    "VERTEBRA_LABELS",
    "LesionAttributes",
    "PhantomCase",
    "assign_classes",
    "class_counts",
    "describe_case",
    "generate_case",
    "generate_dataset",
    "stratified_split",
    "write_overview_figure",
]

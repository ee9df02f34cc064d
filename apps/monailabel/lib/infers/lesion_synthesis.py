"""The MONAI Label infer task: a lesion, described by the request's text, inserted into the study inside a soft mask
around the vertebra, by the bundle's serving API (the same code and bits as the command line)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from bundle.errors import InputError
from bundle.serving import Synthesizer

from .synthesis_request import result_file, synthesis_arguments

CLIENT_ERROR = 422  # bad input: the request is well-formed HTTP but cannot be synthesised as it stands


def client_error(error: InputError) -> HTTPException:
    """The HTTP answer to bad input: status 422 and the bundle's message (it names the file and the problem)."""
    return HTTPException(status_code=CLIENT_ERROR, detail=str(error))


class LesionSynthesis(InferTask):
    """Type "others": returns a synthetic copy of the study (never stored as a label) and, in the result JSON, its
    provenance record (``provenance``: source, text, seed, mask source, model and sampler settings), the warnings on a
    doubtful result (``warnings``: each code, message, measured figure and threshold; empty when none; also logged)
    and the time the synthesis took (``seconds``).

    Request params: ``text`` (the lesion), the vertebra as one of an uploaded ``label``, ``mask_tag`` (a datastore
    label of the study) with ``mask_labels`` (default 1), a ``box`` or a clicked ``foreground`` point with
    ``box_size_mm``, and ``seed``; see :func:`synthesis_request.synthesis_arguments`.
    """

    def __init__(self, synthesizer: Synthesizer) -> None:
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description="MedSoft-Diffusion: insert the lesion the text describes into the vertebra (label, box or "
            "clicked point); returns a synthetic volume",
            config={"text": "", "seed": 0, "mask_tag": "", "mask_labels": "1", "box_size_mm": ""},
        )
        self.synthesizer = synthesizer

    def is_valid(self) -> bool:
        return True  # the network was loaded when the app started

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # MONAILabelApp.infer reads save_label from this dict after the call: a synthetic volume is never a label
        request["save_label"] = False
        work = Path(tempfile.mkdtemp(prefix="lesion_synthesis_"))
        try:
            started = time.perf_counter()
            synthesis = self.synthesizer.synthesize(output_dir=work, **synthesis_arguments(request))
            seconds = time.perf_counter() - started
            record, sent = synthesis.record, result_file(synthesis.volume)
            record["output"] = sent.name  # the file of this answer (the work folder is gone)
            return str(sent), {"provenance": record, "warnings": synthesis.warnings, "seconds": round(seconds, 3)}
        except InputError as error:
            raise client_error(error) from error
        finally:
            shutil.rmtree(work, ignore_errors=True)

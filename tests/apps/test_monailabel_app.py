"""The MONAI Label app for real: ``monailabel start_server`` in its own environment (``make monailabel-env``) on
127.0.0.1 with a tiny models folder; a study uploaded to the datastore; lesion synthesis requested over HTTP with a
box, a clicked point, an uploaded label and a datastore label; bad requests answered with the bundle's message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers.http_client import Answer, call, file_field
from tests.helpers.paths import CONFIGS, REPO, SCT_LEVELS, SCT_T2
from tests.helpers.synthesis_checks import assert_changed_in_mask_only, voxels
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models
from tests.helpers.workflows import bundle_run

pytestmark = pytest.mark.usefixtures("shared_data")

LABEL_ENV = REPO / ".venv-monailabel"
APP = REPO / "apps" / "monailabel"
MODEL = "lesion_synthesis"
STEPS = 2
TEXT = "a 10 mm hyperintense lesion in the vertebral body"
BOX = [[20, 20, 20], [40, 40, 30]]  # voxels of SCT_T2 (60 x 55 x 52)
STUDY = "t2"
START_TIMEOUT_S = 180
# the server's and the command line's: the bits of a float sum can depend on how many threads share it
TORCH_THREADS = "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("monailabel") / "models")


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """``monailabel start_server`` on a free port of 127.0.0.1 (the README's command), stopped afterwards; the
    study and a vertebra segmentation (tag "final") uploaded to its datastore. Yields ``(url, studies folder)``."""
    if not (LABEL_ENV / ".installed").is_file():
        pytest.fail(f"{LABEL_ENV}: the MONAI Label environment is missing: run make monailabel-env")
    root = tmp_path_factory.mktemp("label_server")
    studies, log = root / "studies", root / "server.log"
    studies.mkdir()
    port = free_port()
    command = ["monailabel", "start_server", "--app", str(APP), "--studies", str(studies), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--conf", "models_dir", str(models)]
    command += ["--conf", "spatial_size", str(TINY_SPATIAL_SIZE), "--conf", "num_inference_steps", str(STEPS)]
    env = {**os.environ, "PATH": f"{LABEL_ENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.update(OMP_NUM_THREADS=TORCH_THREADS, PYTHONPATH=str(REPO))  # PYTHONPATH: this checkout's bundle
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        while not answers(url):
            assert process.poll() is None, f"the server exited ({process.returncode}):\n{log.read_text()[-4000:]}"
            assert time.perf_counter() - started < START_TIMEOUT_S, f"no answer after {START_TIMEOUT_S} s"
            time.sleep(0.25)
        print(f"\nMONAI Label server up in {time.perf_counter() - started:.1f} s")
        uploaded = call("PUT", f"{url}/datastore/image?image={STUDY}", {"file": file_field(SCT_T2)})
        assert uploaded.status == 200, uploaded.body
        labelled = call("PUT", f"{url}/datastore/label?image={STUDY}&tag=final", {"label": file_field(SCT_LEVELS)})
        assert labelled.status == 200, labelled.body
        yield url, studies
    finally:
        process.terminate()
        process.wait(timeout=60)


def answers(url: str) -> bool:
    try:
        return call("GET", f"{url}/info/", timeout=5).status == 200
    except OSError:  # not listening yet
        return False


def infer(url: str, params: dict, label: Path | None = None) -> Answer:
    fields = {"params": (None, json.dumps(params).encode())}
    if label is not None:
        fields["label"] = file_field(label)
    answer = call("POST", f"{url}/infer/{MODEL}?image={STUDY}", fields)
    print(f"POST /infer/{MODEL} {sorted(params)}: HTTP {answer.status} in {answer.seconds:.2f} s")
    return answer


def synthetic_volume(answer: Answer, folder: Path) -> tuple[Path, dict]:
    """The volume and the result JSON of a successful answer."""
    assert answer.status == 200, answer.body[-2000:]
    name, content = answer.parts["image"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name, json.loads(answer.parts["params"][1])


def test_a_box_request_returns_the_command_lines_volume_bit_for_bit(server, models, tmp_path, monkeypatch):
    url, studies = server
    volume, result = synthetic_volume(infer(url, {"text": TEXT, "box": BOX, "seed": 7}), tmp_path / "served")
    study = nib.load(str(SCT_T2))
    served = nib.load(str(volume))
    assert served.shape == study.shape and np.array_equal(served.affine, study.affine)
    assert_changed_in_mask_only(volume, SCT_T2, {"box": BOX})
    record = result["provenance"]
    assert record["synthetic"] and record["text"] == TEXT and record["output"] == volume.name
    assert record["mask_source"]["type"] == "box" and record["num_inference_steps"] == STEPS
    assert result["seconds"] > 0
    assert result["warnings"] == record["warnings"]  # a doubtful result's warnings reach the client (empty if none)
    monkeypatch.setenv("OMP_NUM_THREADS", TORCH_THREADS)
    bundle_run(
        *["--config_file", str(CONFIGS / "inference.json"), "--models_dir", str(models)],
        *["--spatial_size", str(TINY_SPATIAL_SIZE), "--num_inference_steps", str(STEPS)],
        *["--image", str(studies / SCT_T2.name), "--text", TEXT, "--box", json.dumps(BOX), "--seed", "7"],
        *["--output_dir", str(tmp_path / "cli")],
    )
    command_line = tmp_path / "cli" / "t2_synthetic.nii.gz"
    differ = voxels(volume) != voxels(command_line)
    assert not differ.any(), f"{differ.sum()} voxels differ from the command line's, at {np.argwhere(differ)[:5]}"
    assert served.header.binaryblock == nib.load(str(command_line)).header.binaryblock
    assert record["seed"] == json.loads((tmp_path / "cli" / "t2_synthetic.json").read_text())["seed"]


def test_a_clicked_point_becomes_a_box_of_box_size_mm(server, tmp_path):
    url, _ = server
    params = {"text": TEXT, "foreground": [[10, 10, 10], [30, 30, 25]], "box_size_mm": "15", "background": []}
    volume, result = synthetic_volume(infer(url, params), tmp_path)
    assert_changed_in_mask_only(volume, SCT_T2, {"point": [30, 30, 25], "box_size_mm": 15})
    source = result["provenance"]["mask_source"]
    assert source["type"] == "point" and source["point"] == [30, 30, 25] and source["box_size_mm"] == [15.0] * 3


def test_an_uploaded_label_and_the_datastore_label_give_the_same_lesion(server, tmp_path):
    url, _ = server
    uploaded, result = synthetic_volume(infer(url, {"text": TEXT, "mask_labels": "3"}, SCT_LEVELS), tmp_path / "up")
    assert_changed_in_mask_only(uploaded, SCT_T2, {"vertebra_seg": str(SCT_LEVELS), "mask_labels": [3]})
    assert result["provenance"]["mask_source"]["type"] == "segmentation"
    assert result["provenance"]["mask_source"]["labels"] == [3]
    stored, _ = synthetic_volume(infer(url, {"text": TEXT, "mask_tag": "final", "mask_labels": [3]}), tmp_path / "ds")
    assert voxels(stored).tobytes() == voxels(uploaded).tobytes()
    # another vertebra, another lesion: the equality above is not that of an unchanged input
    other, _ = synthetic_volume(infer(url, {"text": TEXT, "mask_tag": "final", "mask_labels": [4]}), tmp_path / "4")
    assert voxels(other).tobytes() != voxels(stored).tobytes()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"box": BOX}, "t2: missing lesion text"),
        ({"text": "  ", "box": BOX}, "t2: missing lesion text"),
        ({"text": TEXT}, "request: no vertebra given"),
        ({"text": TEXT, "box": BOX, "foreground": [[30, 30, 25]]}, "give one vertebra source, got 2: box, foreground"),
        ({"text": TEXT, "mask_tag": "final", "mask_labels": [99]}, "none of the labels [99] is present"),
        ({"text": TEXT, "mask_tag": "draft"}, "t2: no label tagged 'draft' in the datastore"),
        ({"text": TEXT, "box": BOX, "seed": "seven"}, "seed must be whole numbers"),
    ],
)
def test_a_bad_request_gets_a_client_error_with_the_bundles_message(server, params, message):
    answer = infer(server[0], params)
    assert answer.status == 422 and message in answer.json()["detail"], answer.body


def test_the_synthetic_volume_is_never_stored_as_a_label(server, tmp_path):
    url, _ = server
    synthetic_volume(infer(url, {"text": TEXT, "box": BOX}), tmp_path)
    labels = call("GET", f"{url}/datastore/?output=all").json()["objects"][STUDY]["labels"]
    assert sorted(labels) == ["final"]  # the uploaded segmentation only

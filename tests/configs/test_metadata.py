"""metadata.json validates offline against MONAI's schema (the copy in docs/schemas, which verify_metadata reads
instead of downloading), has the bundle's name, and configs/metadata.json is the same file."""

from __future__ import annotations

import json

import jsonschema
import pytest
from monai.bundle import ConfigParser, verify_metadata

from tests.helpers.paths import CONFIGS, REPO

SCHEMA = REPO / "docs" / "schemas" / "meta_schema_20240725.json"


def test_configs_metadata_is_the_top_level_file():
    assert (CONFIGS / "metadata.json").resolve() == (REPO / "metadata.json").resolve()


def test_metadata_validates_against_the_bundle_schema(tmp_path):
    schema = json.loads(SCHEMA.read_text())
    metadata = json.loads((REPO / "metadata.json").read_text())
    assert SCHEMA.name == metadata["schema"].rsplit("/", 1)[-1] and metadata["name"] == "spine_mri_lesion_synthesis"
    jsonschema.validate(metadata, schema)
    verify_metadata(meta_file=str(REPO / "metadata.json"), filepath=str(SCHEMA))  # MONAI's own check, offline
    broken = {k: v for k, v in metadata.items() if k != "network_data_format"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'network_data_format' is a required property"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_metadata_versions_match_the_pinned_requirements():
    pins = dict(
        line.strip().split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line
    )
    metadata = json.loads((REPO / "metadata.json").read_text())
    assert metadata["monai_version"] == pins["monai"]
    assert metadata["pytorch_version"] == pins["torch"]
    assert metadata["numpy_version"] == pins["numpy"]
    for package, version in metadata["required_packages_version"].items():
        assert pins[package] == version, package


def test_network_data_format_matches_the_configs_model_size():
    metadata = json.loads((REPO / "metadata.json").read_text())
    shapes = {
        tuple(v["spatial_shape"])
        for part in ("inputs", "outputs")
        for v in metadata["network_data_format"][part].values()
        if v["type"] == "image"
    }
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        parser["bundle_root"] = str(REPO)
        size = parser.get_parsed_content("spatial_size")
        assert shapes == {(size, size)}, name
    assert set(metadata["network_data_format"]["inputs"]) == {"image", "soft_mask", "text"}


def test_the_package_version_is_the_bundle_version():
    """One version: metadata.json's is the package's, which provenance records and pyproject.toml reads."""
    import bundle
    from bundle.utils.bundle_files import code_version

    metadata = json.loads((REPO / "metadata.json").read_text())
    assert bundle.__version__ == metadata["version"] == code_version()["bundle"]
    assert metadata["version"] in metadata["changelog"]
    assert 'version = {attr = "bundle.__version__"}' in (REPO / "pyproject.toml").read_text()

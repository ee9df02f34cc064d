"""Helpers the tests import explicitly: where the bundle and the real scans are, how a config is run, tiny models
and pretrained-folder stand-ins, and dataset layouts. Fixtures are in ``tests/conftest.py``."""

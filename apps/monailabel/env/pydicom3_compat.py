"""pydicom-seg 0.4.1 imports ``pydicom._storage_sopclass_uids``, a private module pydicom 3 removed (its UIDs live
in ``pydicom.uid`` now). Installed by build.sh with a .pth that imports it at start-up: the old name is aliased to
the new module when, and only when, something imports it."""

import importlib.abc
import importlib.util
import sys

_OLD = "pydicom._storage_sopclass_uids"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == _OLD else None

    def create_module(self, spec):
        import pydicom.uid

        return pydicom.uid

    def exec_module(self, module):
        pass


sys.meta_path.append(_Alias())

#!/usr/bin/env bash
# Builds the MONAI Label server's environment: a "layer" venv over the main venv. Usage: build.sh MAIN_VENV OUT_VENV
#
# monailabel 0.8.5 (the released one) cannot be installed beside numpy 2 and pydicom 3 (its numpymaxflow and
# pydicom-seg pins), so it gets a venv of its own whose site-packages has a .pth naming the main venv's: torch,
# monai, numpy 2, pydicom 3 and the bundle's stack come from the main venv (one torch), and the layer adds only the
# server's packages, installed with --no-deps from the pinned closure in requirements.txt. OUT_VENV/.installed is
# written last: its presence means the environment is complete.
set -eo pipefail
MAIN=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "$MAIN" ] || [ -z "$OUT" ] || [ ! -x "$MAIN/bin/python" ]; then
    echo "usage: $0 MAIN_VENV OUT_VENV (MAIN_VENV/bin/python must exist: run make install first)" >&2
    exit 2
fi
OUT=$(realpath -m "$OUT")
rm -rf "$OUT"
# same base interpreter as MAIN; pip comes from MAIN through the .pth below
"$MAIN/bin/python" -m venv --without-pip "$OUT"
purelib() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
SITE=$(purelib "$OUT")
# the main venv's packages, after the layer's own, with its .pth files run (the bundle's editable install)
echo "import site; site.addsitedir('$(purelib "$MAIN")')" >"$SITE/_main_venv.pth"
cp "$HERE/pydicom3_compat.py" "$SITE/_pydicom3_compat.py"
echo "import _pydicom3_compat" >"$SITE/_pydicom3_compat.pth"
"$OUT/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$HERE/requirements.txt"
# What monailabel imports for a local-datastore app with its own infer task is all there; only the requirements
# left out on purpose (requirements.txt says why) and pydicom-seg's metadata caps (numpy<2, jsonschema<4; the code
# it runs does not need them) may be reported.
expected="^monailabel 0\.8\.5 requires (numpymaxflow|sam2|shapely|scikit-learn|pynetdicom|einops|ninja), which is not \
installed|^pydicom-seg 0\.4\.1 has requirement (numpy|jsonschema)"
problems=$("$OUT/bin/python" -m pip check 2>/dev/null | grep -v -E "$expected" || true)
if [ -n "$problems" ]; then
    echo "$problems"
    echo "$OUT: unexpected dependency problems (above)" >&2
    exit 1
fi
(cd / && "$OUT/bin/python" -c "import monailabel.app, pydicom_seg, numpy, pydicom, bundle.serving; \
print('MONAI Label environment ok: monailabel', monailabel.__version__, 'numpy', numpy.__version__, 'pydicom', \
pydicom.__version__, 'bundle', bundle.__version__)")
touch "$OUT/.installed"

#!/usr/bin/env bash
# Build the MONAI Deploy layer venv (requirements.txt) over the bundle's venv; `make deploy-env` runs it.
# Usage: build_env.sh MAIN_VENV OUT_VENV. The stamp OUT_VENV/.installed is written last, so an interrupted build is
# rebuilt from scratch by the next run.
set -euo pipefail
MAIN=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
purelib() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }

rm -rf "$OUT"
"$MAIN/bin/python" -m venv --without-pip "$OUT"
# the layer sees the main venv's packages (torch, monai, pydicom, the bundle's stack) after its own
purelib "$MAIN" >"$(purelib "$OUT")/_main_venv.pth"
MONAI=$("$MAIN/bin/python" -c "import importlib.metadata as m; print(m.version('monai'))")
"$OUT/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --ignore-installed \
    -r "$HERE/requirements.txt" "monai==$MONAI"
# the only unmet requirements are the caps requirements.txt leaves out on purpose
problems=$("$OUT/bin/python" -m pip check 2>/dev/null |
    grep -v -E "^holoscan-cli 4\.2\.0 has requirement (packaging|pip)" || true)
if [ -n "$problems" ]; then
    echo "$problems"
    echo "build_env.sh: unexpected requirement problems in $OUT (above)" >&2
    exit 1
fi
"$OUT/bin/python" -W ignore -c "import holoscan, monai.deploy.operators, highdicom, torch
print('MONAI Deploy layer ok: holoscan', holoscan.__version__, 'torch', torch.__version__)"
touch "$OUT/.installed"

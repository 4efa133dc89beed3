#!/usr/bin/env bash
# The acceptance of a GPU machine in one command, on a bare machine whose Python already has a CUDA torch:
#   bash scripts/gpu_acceptance.sh [WHEELS_DIR (default: wheels)] [OUT_DIR (default: acceptance)]
# What else the project needs comes from WHEELS_DIR, installed with --no-index (the machine may have no network);
# make that folder where there is network, for the GPU machine's platform and Python (README, "The first GPU run").
# Then `python -m bench doctor --full --out OUT_DIR`: send OUT_DIR/doctor-*.md and doctor-*.json. Exit status: 0,
# or 1 when a check FAILed, 2 when something is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wheels=${1:-wheels} out=${2:-acceptance}
python=${PYTHON:-python3}

if ! "$python" -c "import torch, torchvision, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_acceptance: $python has no torch and torchvision with a CUDA device; run it where they are (PYTHON=...)" >&2
    exit 2
fi
# import name -> the package that provides it
missing=$("$python" - <<'PY'
import importlib.util
NEEDED = {"numpy": "numpy", "scipy": "scipy", "mat4py": "mat4py", "simplejpeg": "simplejpeg", "tqdm": "tqdm",
          "cv2": "opencv-python-headless", "PIL": "pillow"}
print(" ".join(package for name, package in NEEDED.items() if importlib.util.find_spec(name) is None))
PY
)
if [ -n "$missing" ]; then
    if ! "$python" -m pip install --quiet --no-index --no-deps --find-links "$wheels" $missing 2>/dev/null; then
        echo "gpu_acceptance: missing $missing, and $wheels has no wheel of it for this Python; make the folder as the README says" >&2
        exit 2
    fi
fi
exec "$python" -m bench doctor --full --out "$out"

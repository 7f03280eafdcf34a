#!/usr/bin/env bash
# Fill benchmarks/wheels/ (git-ignored) with the wheels that benchmarks/gpu_check.sh installs on a GPU machine
# that reaches no package index. Those machines run Python 3.12 on Linux x86_64 with torch, torchvision, timm,
# numpy, pandas, scipy, scikit-learn, opencv-python-headless, pillow, typer, rich and safetensors installed, but
# not optuna (nor sqlalchemy, alembic, colorlog), optuna-dashboard, albumentations, albucore or pydantic.
#
#     bash benchmarks/gpu_wheels.sh          # on a connected machine, from the repository root
#
# It downloads the missing packages with their dependencies, then drops the wheels of what those machines already
# have (large, and never installed there), so the folder stays small enough to send along with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels
PACKAGES=(optuna optuna-dashboard "albumentations==2.0.8" pyyaml plotly pytest pytest-timeout)
PRESENT='^(torch|torchvision|timm|numpy|pandas|scipy|scikit_learn|opencv_python_headless|pillow|typer|rich|safetensors|nvidia_.*|triton|sympy|mpmath|networkx|jinja2|fsspec|filelock|huggingface_hub|hf_xet|setuptools|python_dateutil|pytz|tzdata|six|joblib|threadpoolctl|click|shellingham|markdown_it_py|mdurl|pygments|requests|urllib3|idna|certifi|charset_normalizer)-'
mkdir -p "$WHEELS"
python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$WHEELS" "${PACKAGES[@]}"
for wheel in "$WHEELS"/*.whl; do
  name=$(basename "$wheel" | tr 'A-Z' 'a-z')
  if [[ $name =~ $PRESENT ]]; then rm "$wheel"; fi
done
# The face detector for the face crops (users download it; the GPU machine cannot): the copy beside the repository.
if [ -f ../shared/models/face_detection_yunet_2026may.onnx ]; then
  cp ../shared/models/face_detection_yunet_2026may.onnx "$WHEELS/"
fi
echo "wheels in $WHEELS: $(ls "$WHEELS" | wc -l) files, $(du -sh "$WHEELS" | cut -f1)"

#!/usr/bin/env bash
# benchmarks/gpu.py and the tests marked cuda on a lent GPU machine, from what benchmarks/gpu_bundle.py packed into .gpu/.
#   python benchmarks/gpu_bundle.py                       # here, first: writes .gpu/ and prints the device calls
#   bash benchmarks/gpu.sh figures [gpu.py options]       # the figures, into $OUT/gpu (results/gpu elsewhere)
#   bash benchmarks/gpu.sh tests [pytest options]         # the tests marked cuda, their log into $OUT/gpu
#   bash benchmarks/gpu.sh [gpu.py options]               # both in one gpu.py run, where there is no time limit
#   bash benchmarks/gpu.sh figures --device cpu --images 32 --threads 1    # here: the same path as a dry check
# One device call runs at most 10 minutes: give figures and tests a call each (the second finds the machine warm).
# gpu.py writes its report after every section, so a call stopped at its limit still returns what it finished.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .gpu/site.tar.xz ] || { echo "gpu.sh: .gpu/site.tar.xz not found; run python benchmarks/gpu_bundle.py first" >&2; exit 2; }
site="${NXB_GPU_SITE:-/tmp/nxb-gpu-site}"
mkdir -p "$site"
tar -xJf .gpu/site.tar.xz -C "$site"
# The source tree laid out as the installed package is (attacks/ installs as nonxfer_bench.attacks), for this run only.
if [ ! -d nonxfer_bench/attacks ]; then  # (a link a killed run left behind, dangling or not, is replaced)
  ln -sfn ../attacks nonxfer_bench/attacks
  trap 'rm -f nonxfer_bench/attacks' EXIT
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out="${OUT:+$OUT/gpu}"
out="${out:-results/gpu}"
mkdir -p "$out"
python3 -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda: {torch.cuda.is_available()}")'
mode="${1:-all}"
case "$mode" in
  figures) shift; extra=(--no-cuda-tests) ;;
  tests) shift
    # only the files that hold cuda tests: the others import packages (mlflow, playwright, ray) the machine lacks
    mapfile -t files < <(grep -rl "mark.cuda" tests --include="test_*.py" | sort)
    [ "${#files[@]}" -gt 0 ] || { echo "gpu.sh: no test file marks a test cuda" >&2; exit 2; }
    python3 -m pytest -q -m cuda -p no:cacheprovider "${files[@]}" "$@" 2>&1 | tee "$out/cuda-tests.log"
    exit "${PIPESTATUS[0]}" ;;
  all) [ "$#" -gt 0 ] && [ "$1" = all ] && shift; extra=() ;;
  *) extra=() ;;  # gpu.py options
esac
python3 benchmarks/gpu.py --out "$out" --fashion-root .gpu/fashion-mnist "${extra[@]}" "$@" 2>&1 | tee "$out/gpu.log"

#!/usr/bin/env bash
# benchmarks/gpu.py on a lent GPU machine, from the packages benchmarks/gpu_bundle.py packed into .gpu/:
#   python benchmarks/gpu_bundle.py                                   # here, first: writes .gpu/, prints the call
#   run(command="bash benchmarks/gpu.sh", carry=[".gpu"], timeout_s=540)    # the device tool; figures in $OUT/gpu
#   bash benchmarks/gpu.sh --device cpu --images 32 --threads 1       # here: the same path as a dry check
# Options after the script's name go to gpu.py. The defaults are sized to finish inside one 10-minute device call;
# gpu.py writes its report after every section, so a call stopped at its limit still returns what it finished.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .gpu/site.tar.xz ] || { echo "gpu.sh: .gpu/site.tar.xz not found; run python benchmarks/gpu_bundle.py first" >&2; exit 2; }
site="${NXB_GPU_SITE:-/tmp/nxb-gpu-site}"
mkdir -p "$site"
tar -xJf .gpu/site.tar.xz -C "$site"
# The source tree laid out as the installed package is (attacks/ installs as nonxfer_bench.attacks), for this run only.
if [ ! -e nonxfer_bench/attacks ]; then
  ln -s ../attacks nonxfer_bench/attacks
  trap 'rm -f nonxfer_bench/attacks' EXIT
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out="${OUT:+$OUT/gpu}"
out="${out:-results/gpu}"
mkdir -p "$out"
python3 -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda: {torch.cuda.is_available()}")'
python3 benchmarks/gpu.py --out "$out" --fashion-root .gpu/fashion-mnist "$@" 2>&1 | tee "$out/gpu.log"

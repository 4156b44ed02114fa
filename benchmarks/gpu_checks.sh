#!/usr/bin/env bash
# Every check that needs a GPU, in one prepared run of about 8 minutes, for a session that is lent
# a GPU machine (15 minutes of device time: this run, and room to rerun it once).
#
# Run it from the repository root with a Python that has torch with CUDA and selfsup's
# dependencies (the device machines' image has them; gensim is not needed here):
#
#     OUT=gpu-results SELFSUP_CIFAR=.gpu/cifar10 bash benchmarks/gpu_checks.sh
#
# SELFSUP_CIFAR: a folder of CIFAR-10 tar shards for the SimCLR throughput. ../shared does not
# travel to a device machine: copy two train shards into an ignored folder of the checkout
# (`mkdir -p .gpu/cifar10 && cp ../shared/data/cifar10/train-000[01].tar .gpu/cifar10/`,
# `echo /.gpu/ >> .git/info/exclude`) and name `.gpu` in the run's carry.
#
# Writes into $OUT: versions.txt, tests.txt (the CUDA tests: tests/test_gpu.py and the nvJPEG
# cases of tests/data/test_device_decode.py), decode.md, throughput_simclr.md and
# throughput_mlm.md, the figures for benchmarks/RESULTS.md and decode.md.
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$py" - <<'EOF' 2>&1 | tee "$out/versions.txt"
import lightning_fabric, torch, torchvision, transformers
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "transformers", transformers.__version__, "lightning-fabric", lightning_fabric.__version__)
print("GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
EOF

# 1. the CUDA tests (about 2 minutes)
timeout 300 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py \
    tests/data/test_device_decode.py 2>&1 | tee "$out/tests.txt"

# 2. JPEG decoding: the workers' PIL path, torchvision on the CPU and nvJPEG (about 1 minute)
timeout 180 "$py" benchmarks/bench_decode.py --images 512 --out "$out/decode.md"

# 3. SimCLR end to end against its ceiling and the per-image pipeline, bf16 and fp32
timeout 240 "$py" benchmarks/throughput.py --device cuda --cache --precision bf16-mixed 32-true \
    --no-memory 2>&1 | tee "$out/throughput_simclr.md"

# 4. MLM (BERT-mini, 128-token blocks) tokens/s against its ceiling
timeout 120 "$py" benchmarks/throughput.py --device cuda --method mlm --batch 32 \
    --precision bf16-mixed --no-memory 2>&1 | tee "$out/throughput_mlm.md"

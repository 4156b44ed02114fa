#!/usr/bin/env bash
# Every check that needs a GPU, in one prepared run of at most 9.5 minutes, for a session that is lent
# a GPU machine (15 minutes of device time: this run, and room to rerun it once).
#
# Run it from the repository root with a Python that has torch with CUDA and selfsup's
# dependencies:
#
#     OUT=gpu-results SELFSUP_CIFAR=.gpu/cifar10 bash benchmarks/gpu_checks.sh
#
# STEPS (default "tests decode simclr mlm word2vec") picks steps, e.g. to rerun one. Each step has
# its own time limit; all together stay under 9.5 minutes.
#
# Preparing the carried folder `.gpu` here (`echo /.gpu/ >> .git/info/exclude`; name `.gpu` in the
# run's carry, 64 MiB at most):
#   * SELFSUP_CIFAR: CIFAR-10 tar shards for the SimCLR throughput. ../shared does not travel:
#     `mkdir -p .gpu/cifar10 && cp ../shared/data/cifar10/train-000[01].tar .gpu/cifar10/`.
#   * .gpu/wheels: the packages the device image lacks, as wheels for its Python (3.12), installed
#     below. The image of 2026-11 had no gensim (selfsup's built-in text corpora come from it) and
#     listed no lightning-fabric: `python3 -m pip download --no-deps --only-binary=:all:
#     --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64
#     -d .gpu/wheels gensim smart-open lightning-fabric numba llvmlite` (smart-open: gensim
#     imports it; without numba, word2vec's CPU kernel falls back to torch).
#
# Writes into $OUT: versions.txt, tests.txt (the CUDA tests: tests/test_gpu.py and the nvJPEG
# cases of tests/data/test_device_decode.py), decode.md, throughput_simclr.md and
# throughput_mlm.md (figures for benchmarks/RESULTS.md and decode.md) and word2vec_gpu.md.
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".gpu/wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

want() { [[ " ${STEPS:-tests decode simclr mlm word2vec} " == *" $1 "* ]]; }

"$py" - <<'EOF' 2>&1 | tee "$out/versions.txt"
import gensim, lightning_fabric, torch, torchvision, transformers
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "transformers", transformers.__version__, "lightning-fabric", lightning_fabric.__version__,
      "gensim", gensim.__version__)
print("GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
EOF

# 1. the CUDA tests
want tests && timeout 240 "$py" -m pytest -v -p no:cacheprovider -rs tests/test_gpu.py \
    tests/data/test_device_decode.py 2>&1 | tee "$out/tests.txt"

# 2. JPEG decoding: the workers' PIL path, torchvision on the CPU and nvJPEG
want decode && timeout 45 "$py" benchmarks/bench_decode.py --images 256 --out "$out/decode.md"

# 3. SimCLR end to end against its ceiling and the per-image pipeline, bf16 and fp32
want simclr && timeout 140 "$py" benchmarks/throughput.py --device cuda --cache --precision bf16-mixed 32-true \
    --no-memory 2>&1 | tee "$out/throughput_simclr.md"

# 4. MLM (BERT-mini, 128-token blocks) tokens/s against its ceiling
want mlm && timeout 45 "$py" benchmarks/throughput.py --device cuda --method mlm --batch 32 \
    --precision bf16-mixed --no-memory 2>&1 | tee "$out/throughput_mlm.md"

# 5. word2vec on the GPU beside gensim on all the machine's cores (issue: ahead of gensim on a GPU)
want word2vec && timeout 90 "$py" benchmarks/bench_word2vec.py --device cuda --repeats 1 --workers "$(nproc)" \
    --batch-size 16 --out "$out/word2vec_gpu.md" 2>&1 | tail -n 5

#!/usr/bin/env bash
# The GPU checks, run on the GPU machine from the repository root after scripts/gpu-carry.sh
# prepared build/gpu_carry here (docs/gpu.md): the CUDA test suite in file order and, when that
# was quick, again in random order; the Fashion-MNIST MLP example (the main job, 20 epochs) and 2
# epochs of the CNN example; then gpu-mlp (benchmarks/gpu.sh with the carried gpu_mlp, beside
# PyTorch eager and captured when python3 has PyTorch with CUDA). Logs go to $OUT (or
# build/gpu_logs).
set -u
root=$(pwd)
carry="$root/build/gpu_carry"
out="${OUT:-$root/build/gpu_logs}"
mkdir -p "$out"
cd "$carry"
python3 -c "import lzma, glob, os, shutil
for f in glob.glob('*/*.xz'):
    shutil.copyfileobj(lzma.open(f), open(f[:-3], 'wb')); os.remove(f)"
chmod +x bin/*
# The test binary reads its fixtures from the source directory it was built in.
built_in=$(grep -a -o -m1 '/[[:alnum:]/._-]*/tests/optimizers' bin/batchwise_tests_cuda | head -n1 | sed 's|/tests/optimizers$||')
if [ -n "$built_in" ] && [ ! -e "$built_in" ]; then mkdir -p "$(dirname "$built_in")" && ln -s "$root" "$built_in"; fi
export LD_LIBRARY_PATH="$carry/lib:${LD_LIBRARY_PATH:-}"
source "$root/scripts/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS"
mkdir -p /usr/share/datasets/fashion-mnist && cp data/*.gz /usr/share/datasets/fashion-mnist/
ldd bin/batchwise_tests_cuda | grep -E "not found|cublas|openblas"
SECONDS=0
timeout 300 bin/batchwise_tests_cuda >"$out/cuda_tests.log" 2>&1
echo "suite (file order): rc=$? in ${SECONDS} s"
grep -E "test cases|assertions|Status" "$out/cuda_tests.log"
grep -B2 -A12 "ERROR\|FATAL" "$out/cuda_tests.log" | head -120
if [ "$SECONDS" -lt 100 ]; then
    timeout 120 bin/batchwise_tests_cuda --order-by=rand --rand-seed=17 >"$out/cuda_tests_random.log" 2>&1
    echo "suite (random order): rc=$?"
    grep -E "test cases|assertions|Status" "$out/cuda_tests_random.log"
    grep -B2 -A12 "ERROR\|FATAL" "$out/cuda_tests_random.log" | head -60
fi
timeout 90 bin/fashion_mnist_cuda 20 >"$out/fashion_mnist_cuda.log" 2>&1
echo "fashion_mnist_cuda: rc=$?"
tr '\r' '\n' <"$out/fashion_mnist_cuda.log" | grep -vE "^\s*[0-9]+/[0-9]+ " | tail -6
timeout 90 bin/fashion_mnist_cnn_cuda 2 >"$out/fashion_mnist_cnn_cuda.log" 2>&1
echo "fashion_mnist_cnn_cuda: rc=$?"
tr '\r' '\n' <"$out/fashion_mnist_cnn_cuda.log" | grep -vE "^\s*[0-9]+/[0-9]+ " | tail -6
cd "$root"
SECONDS=0
GPU_MLP_REPS="${GPU_MLP_REPS:-3}"
timeout 420 benchmarks/gpu.sh --bin "$carry/bin/gpu_mlp" --reps "$GPU_MLP_REPS" >"$out/gpu_mlp.log" 2>&1
echo "gpu.sh: rc=$? in ${SECONDS} s"
cp benchmarks/results/gpu_mlp.md benchmarks/results/gpu_mlp.jsonl build/gpu_mlp.log "$out/" 2>/dev/null
cat "$out/gpu_mlp.log" | grep -E "^\||FAILED" | head -40

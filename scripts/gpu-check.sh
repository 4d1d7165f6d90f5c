#!/usr/bin/env bash
# Runs on the GPU machine (CUDA driver + NVRTC, no Rust): the kernel
# correctness checks against the CPU kernels and the ssm_step/conv_step
# benchmark, from a binary built on a CPU machine of this project:
#   cargo build --release --features cuda --bin m2c-gpu-check
# Usage: bash scripts/gpu-check.sh [path/to/m2c-gpu-check] [report.md]
# Well under 5 minutes on an H100.
set -u
bin=${1:-target/release/m2c-gpu-check}
report=${2:-${OUT:-.}/gpu-results.md}
[ -x "$bin" ] || { echo "gpu-check: $bin not found: build it with cargo build --release --features cuda --bin m2c-gpu-check"; exit 2; }
# cudarc loads libcuda and libnvrtc dynamically: make NVRTC findable.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
if ! ldconfig -p | grep -q 'libnvrtc.so' && ! ls /usr/local/cuda/lib64/libnvrtc.so* >/dev/null 2>&1; then
    n=$(find / -xdev -name 'libnvrtc.so*' -not -name '*builtins*' 2>/dev/null | head -1)
    [ -n "$n" ] && LD_LIBRARY_PATH="$(dirname "$n"):${LD_LIBRARY_PATH:-}"
fi
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/nvidia-smi: /'
start=$SECONDS
"$bin" | tee "$report"
rc=${PIPESTATUS[0]}
echo "gpu-check: exit $rc in $((SECONDS - start)) s; report in $report"
exit $rc

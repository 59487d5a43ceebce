#!/usr/bin/env bash
# scripts/gpu-check without a GPU (ctest gpu_check_dry_run): a stand-in nvidia-smi and a bundle of stand-in programs
# (one test program and one benchmark that pass, the others without a device, as on a machine with no GPU). Checks
# that every step runs and is summarized (PASS with its figures, FAIL with its "no CUDA device" line), that a stale
# bundle is a WARN, that the logs and summary.json reach $OUT, and that a machine without nvidia-smi stops at once.
# Usage: check_gpu_check.sh REPOSITORY WORK_FOLDER
set -euo pipefail
repo="$1"
work="$2"
rm -rf "${work}"
mkdir -p "${work}/path" "${work}/bundle/bin" "${work}/bundle/lib/compat" "${work}/bundle/traces" "${work}/out"

fail() {
  echo "check_gpu_check: $*" >&2
  exit 1
}

cat >"${work}/path/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
case "$*" in
  -L) echo "GPU 0: Stand-in H100 (UUID: GPU-0)" ;;
  *query-gpu=name*) echo "Stand-in H100" ;;
  *query-gpu=compute_cap*) echo "9.0" ;;
  *query-gpu=driver_version*) echo "580.0" ;;
  *query-gpu=memory.total*) echo "81559 MiB" ;;
  *query-gpu=compute_mode*) echo "Default" ;;
esac
EOF
no_device() {  # a program that finds no device, as the real ones do
  printf '#!/usr/bin/env bash\necho "%s: no CUDA device (no CUDA-capable device is detected)" >&2\nexit 2\n' "$1" \
    >"${work}/bundle/bin/$1"
}
for p in test_cuda_allocation test_cuda_bf16 test_cuda_adapters test_cuda_validate test_cuda_distributed \
  adalora-validate-cuda bench_adapter_cuda; do
  no_device "${p}"
done
cat >"${work}/bundle/bin/test_cuda_backend" <<'EOF'
#!/usr/bin/env bash
[[ -n "${ADALORA_TRACES_DIR:-}" && -f "${ADALORA_TRACES_DIR}/alloc-x.safetensors" ]] || { echo "no traces"; exit 1; }
echo "All tests passed (120 assertions in 7 test cases)"
EOF
cat >"${work}/bundle/bin/adalora-trace" <<'EOF'
#!/usr/bin/env bash
echo "FAIL $3: --backend cuda needs a CUDA device, and there is none here (no CUDA-capable device is detected)"
exit 1
EOF
cat >"${work}/bundle/bin/bench_allocator_cuda" <<'EOF'
#!/usr/bin/env bash
echo "Summary: bytes/s the step must move, as a share of this run's device-to-device copy bandwidth"
echo "benchmark                         ms/step      GB/s   % copy  launches  allocs  adapters"
echo "step/mask/llama/cuda                0.900    1500.0      45%         8       0       224"
echo "step/update/llama/cuda              0.500    2500.0      75%         2       0       224"
echo "bandwidth/copy/cuda                 0.600    3333.0 GB/s"
EOF
chmod +x "${work}/path/nvidia-smi" "${work}/bundle/bin/"*
touch "${work}/bundle/traces/alloc-x.safetensors"
printf 'format=1\ncuda_architectures=90\nsources_sha256=0000\ncommit=0123456789abcdef\nbuilt=then\nlibraries=\n' \
  >"${work}/bundle/MANIFEST"
echo "CMakeLists.txt" >"${work}/bundle/sources.txt"  # its hash is not 0000: a stale bundle

start=${SECONDS}
rc=0
PATH="${work}/path:${PATH}" OUT="${work}/out" ADALORA_GPU_BUNDLE="${work}/bundle" ADALORA_GPU_BUILD_DIR="${work}/gpu" \
  bash "${repo}/scripts/gpu-check" >"${work}/gpu-check.out" 2>&1 || rc=$?
elapsed=$((SECONDS - start))
summary="${work}/out/summary.txt"
[[ ${rc} == 1 ]] || fail "exit status ${rc}, expected 1 (checks failed); output in ${work}/gpu-check.out"
(( elapsed < 60 )) || fail "took ${elapsed}s without a GPU, expected well under a minute"
for f in gpu-check.log summary.txt summary.json gpu-check-logs.tar.gz; do
  [[ -s "${work}/out/${f}" ]] || fail "\$OUT lacks ${f}"
done
grep -q 'gpu-check: FAILED' "${work}/out/gpu-check.log" || fail "gpu-check.log lacks the summary's last line"
expect() {  # expect NAME STATUS PATTERN
  grep -E "^  $1 +$2 " "${summary}" | grep -qE "$3" || fail "no '$1 $2 ... $3' line in the summary:
$(cat "${summary}")"
}
expect "bundle sources" WARN "STALE"
expect "test_cuda_backend" PASS "All tests passed \(120 assertions"
for t in test_cuda_allocation test_cuda_bf16 test_cuda_adapters test_cuda_validate test_cuda_distributed \
  bench_adapter_cuda; do
  expect "${t}" FAIL "no CUDA device"
done
expect "traces, --backend cuda" FAIL "there is none here"
expect "CUDA vs Eigen \(validate-cuda\)" FAIL "no CUDA device"
expect "bench_allocator_cuda" PASS "update/llama 0.500ms 75%.*launches update 2, mask 8; allocs/step 0"
[[ "$(tail -n 1 "${summary}")" == "gpu-check: FAILED"* ]] || fail "the summary's last line is not the verdict"
grep -q '"passed": false' "${work}/out/summary.json" || fail "summary.json does not say the run failed"
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert len(d["checks"]) == 13, len(d["checks"])' \
    "${work}/out/summary.json" || fail "summary.json is not the expected JSON"
fi

# no nvidia-smi at all: one line, at once (skipped where a real one is on the plain PATH)
if ! PATH=/usr/bin:/bin command -v nvidia-smi >/dev/null 2>&1; then
  rc=0
  PATH=/usr/bin:/bin ADALORA_GPU_BUNDLE="${work}/bundle" ADALORA_GPU_BUILD_DIR="${work}/gpu2" \
    bash "${repo}/scripts/gpu-check" >"${work}/no-gpu.out" 2>&1 || rc=$?
  [[ ${rc} == 1 ]] || fail "without nvidia-smi: exit status ${rc}, expected 1"
  grep -q 'nvidia-smi is not installed' "${work}/no-gpu.out" || fail "without nvidia-smi: no clear message"
fi
echo "check_gpu_check: gpu-check ran every step without a GPU in ${elapsed}s and summarized them"

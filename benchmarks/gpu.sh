#!/usr/bin/env bash
# One GPU, ~5 minutes (parts capped at 240 + 200 + 180 s): the GPU figures of smec's pipelines, side by side with their plain
# single-process counterparts on the same machine, into OUT/gpu.json (+ each benchmark's folder).
#
#   bash benchmarks/gpu.sh [OUT]          (default OUT: benchmarks/results/gpu)
#
# 1. ETL: `smec embed --corpus` (Ray Data: read/tokenise tasks on the CPUs, encoder actor with
#    num_gpus=1, fp16, 65,536-token longest-first batches) against plain
#    SentenceTransformer.encode on cuda in fp16, docs/s, all-MiniLM-L6-v2 at max 256 tokens
#    (benchmarks/etl.py --num-gpus 1); the Ray arm's worker seconds split read / tokenise /
#    encode / write, and the fp16 FLOP fraction is estimated from the tokens encoded.
# 2. Compress: `smec compress` with SMEC_GPU_ACTORS compressor actors (default 4) sharing the
#    GPU against a plain torch loop on cuda, vectors/s at 1M vectors (benchmarks/compress_throughput.py).
# 3. Train: one SMEC run (its own defaults, 3 epochs per stage) on cuda against the same run on
#    the machine's CPU, steady-state step time, and one `smec train` through Ray Train with one
#    worker on the GPU (benchmarks/train_device.py --ray).
# SMEC_GPU_PARTS picks the parts (default "etl compress train"; each writes its own folder, so
# a rerun of one part keeps the others' results).
# Environment: SMEC_GPU_MODEL (default all-MiniLM-L6-v2), SMEC_GPU_DOCS (default 50000),
# SMEC_GPU_STORE / SMEC_GPU_COMPRESSOR (default: what `smec demo` wrote in runs/scifact-mini),
# PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
MODEL=${SMEC_GPU_MODEL:-all-MiniLM-L6-v2}
DOCS=${SMEC_GPU_DOCS:-50000}
ACTORS=${SMEC_GPU_ACTORS:-4}
STORE=${SMEC_GPU_STORE:-runs/scifact-mini/embeddings/corpus}
COMPRESSOR=${SMEC_GPU_COMPRESSOR:-runs/scifact-mini/compressor}
PARTS=${SMEC_GPU_PARTS:-etl compress train}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
start=$(date +%s)
case " $PARTS " in *" etl "*)
timeout 240 "$PYTHON" benchmarks/etl.py --docs "$DOCS" --model "$MODEL" --num-gpus 1 \
    --batch-size 256 --batch-tokens 65536 --max-seq-length 256 --out "$OUT/etl" ;; esac
case " $PARTS " in *" compress "*)
timeout 200 "$PYTHON" benchmarks/compress_throughput.py --store "$STORE" --compressor "$COMPRESSOR" \
    --sizes 1000000 --num-actors "$ACTORS" --num-gpus "$("$PYTHON" -c "print(round(1 / $ACTORS, 3))")" \
    --out "$OUT/compress" ;; esac
case " $PARTS " in *" train "*)
timeout 180 "$PYTHON" benchmarks/train_device.py --run "$(dirname "$(dirname "$STORE")")" \
    --devices cpu cuda --epochs 3 --ray --out "$OUT/train" ;; esac
"$PYTHON" - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def read(part):
    path = out / part / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "seconds": int(sys.argv[2])}
etl, compress, train = read("etl"), read("compress"), read("train")
if etl:
    summary.update({
        "etl_fp16_docs_per_s": {arm: etl["arms"][arm]["docs_per_s"] for arm in etl["arms"]},
        "etl_ratio_ray_over_plain": etl["ratio"],
        "etl_ray_worker_seconds": etl["arms"]["ray"].get("worker_seconds"),
        "etl_fp16_flop_fraction": etl.get("fp16_flop_fraction")})
if compress:
    summary.update({
        "compress_vectors_per_s": {arm: compress["runs"][-1][arm]["vectors_per_s"]
                                   for arm in ("ray", "plain")},
        "compress_ratio_ray_over_plain": compress["runs"][-1]["ratio"],
        "compress_codes_equal": compress["runs"][-1]["codes_equal"]})
if train:
    summary.update({
        "train_step_time_s": {d: r["steady_step_time_s"] for d, r in train["devices"].items()},
        "train_cuda_speedup_over_cpu": train.get("cuda_speedup_over_cpu"),
        "train_ray_gpu": train.get("ray_train_gpu")})
(out / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY

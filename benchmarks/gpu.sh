#!/usr/bin/env bash
# One GPU, under 8 minutes: the GPU figures of smec's pipelines, side by side with their plain
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
#    GPU against a plain torch loop on cuda, vectors/s at 1M vectors (benchmarks/compress.py).
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
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
start=$(date +%s)
timeout 240 "$PYTHON" benchmarks/etl.py --docs "$DOCS" --model "$MODEL" --num-gpus 1 \
    --batch-size 256 --batch-tokens 65536 --max-seq-length 256 --out "$OUT/etl"
timeout 200 "$PYTHON" benchmarks/compress.py --store "$STORE" --compressor "$COMPRESSOR" \
    --sizes 1000000 --num-actors "$ACTORS" --num-gpus "$("$PYTHON" -c "print(round(1 / $ACTORS, 3))")" \
    --out "$OUT/compress"
"$PYTHON" - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
etl = json.loads((out / "etl" / "results.json").read_text())
compress = json.loads((out / "compress" / "results.json").read_text())
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "seconds": int(sys.argv[2]),
           "etl_fp16_docs_per_s": {arm: etl["arms"][arm]["docs_per_s"] for arm in etl["arms"]},
           "etl_ratio_ray_over_plain": etl["ratio"],
           "etl_ray_worker_seconds": etl["arms"]["ray"].get("worker_seconds"),
           "etl_fp16_flop_fraction": etl.get("fp16_flop_fraction"),
           "compress_vectors_per_s": {arm: compress["runs"][-1][arm]["vectors_per_s"]
                                      for arm in ("ray", "plain")},
           "compress_ratio_ray_over_plain": compress["runs"][-1]["ratio"],
           "compress_codes_equal": compress["runs"][-1]["codes_equal"]}
(out / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY

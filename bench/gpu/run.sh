#!/bin/bash
# Device check on one GPU host (no network): the platform's training and scoring beside the plain PyTorch
# loops of ../shared/gpu (what a user would write instead) and the GPU's ceiling, on the same prepared images;
# plus the data-only ingest bench and bf16-vs-fp32 scoring. Extends ../shared/gpu/run.sh.
#
# On this machine, after `make install`:   bash ../shared/gpu/make-site.sh      (writes .gpu/, git-excluded)
# Carry .gpu to the host; there, from the project root:   OUT=<folder> bash bench/gpu/run.sh
# Every step has its own time limit; the whole run fits in about 9 minutes on one H200 with 16 CPU cores.
# Outputs in $OUT: log.txt (every step's output), env.txt (nvidia-smi, CPUs), dmon_*.txt (SM use, 1 s samples),
# bench_ingest.json, the submissions of bf16 and fp32 scoring and their comparison.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
SEQ=${SEQ:-1000}; K=${K:-4}; FS=${FS:-1024x768}
# PARTS: which parts to run (train, score, ingest, fp32). Without train, scoring uses an untrained rx50 at 512 px.
PARTS=${PARTS:-train,score,ingest,fp32}
has() { case ",$PARTS," in *",$1,"*) return 0;; *) return 1;; esac; }
ROOT=$PWD; G=$ROOT/.gpu; W=${W:-/tmp/w}
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 RAY_USAGE_STATS_ENABLED=0
PY=${PY:-python3}
LOG=$OUT/log.txt
NCPU=$(nproc)
say() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
step() { local t=$1; shift; say "RUN ($t s): $*"; local s=$SECONDS; timeout -k 5 "$t" "$@" >>"$LOG" 2>&1; local rc=$?; say "rc=$rc in $((SECONDS - s)) s"; return $rc; }
dmon() { nvidia-smi dmon -s u -d 1 >"$OUT/dmon_$1.txt" 2>&1 & DM=$!; }
mkdir -p /tmp/site && tar -xJf "$G/site.tar.xz" -C /tmp/site
export PYTHONPATH=/tmp/site:$ROOT/src
{ nvidia-smi; echo "cpus $NCPU"; free -g; } >"$OUT/env.txt" 2>&1
cd "$ROOT"
step 60 $PY -c "import torch, timm, ray, camtrap; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0), 'timm', timm.__version__, 'ray', ray.__version__)"
rm -rf "$W"; mkdir -p "$W"
step 90 $PY ray_jobs/make_demo_data.py --out $W/data --sequences $SEQ --seed 0 --species zebra,elephant,giraffe --frame-sizes $FS --workers $NCPU
step 30 $PY $G/replicate.py $W/data $K $W/big
step 90 $PY ray_jobs/prepare.py --metadata $W/big/train_metadata.csv --metadata $W/big/test_metadata.csv --images-dir $W/data/images --out $W/prep --long-side 512
TAB="--metadata $W/big/train_metadata.csv --labels $W/big/train_labels.csv --images-dir $W/prep"
# 1. Training: the platform (Ray Train + Ray Data) beside the plain DataLoader loop and the synthetic ceiling.
if has train; then
  dmon train
  step 150 $PY ray_jobs/train.py --recipe $G/rx50_gpu.yaml $TAB --out $W/run --use-gpu ${TRAIN_EXTRA:-}
  kill $DM
  step 40 $PY $G/plain_train.py --synthetic --batch 196 --steps ${STEPS:-40}
  dmon plain
  step 80 $PY $G/plain_train.py $TAB --epochs 3 --workers $((NCPU - 1)) ${PLAIN_EXTRA:-}
  kill $DM
else
  step 30 $PY -c "from camtrap.bench.common import untrained_model_file as u; u('$W/run/model.pt', 512, arch='resnext50_32x4d')"
fi
# 2. Scoring: the platform's defaults on CUDA (bf16 autocast, the device's batch) beside the plain bf16 loop.
if has score; then
  dmon predict
  step 90 $PY ray_jobs/predict.py --model $W/run/model.pt --metadata $W/big/train_metadata.csv --images-dir $W/prep --out $W/pred_bf16.csv
  kill $DM
  step 50 $PY $G/plain_predict.py --metadata $W/big/train_metadata.csv --images-dir $W/prep --workers $((NCPU - 1))
fi
# 3. Data only: the training input pipeline with no model vs a DataLoader on the same CPUs (Ray Data's breakdown).
has ingest && step ${INGEST_S:-120} $PY ray_jobs/bench.py ingest --device cuda $TAB --prepared $W/prep --train-long-side 296 --batch-size 196 --epochs 3 --repeats 1 --ingest-copies 1 --out $OUT/bench_ingest.json
# 4. Scoring in fp32, to state the largest probability difference of bf16 autocast and the metric of both.
has fp32 || { say "done in $SECONDS s"; exit 0; }
step 70 $PY ray_jobs/predict.py --model $W/run/model.pt --metadata $W/big/train_metadata.csv --images-dir $W/prep --out $W/pred_fp32.csv --amp off
step 30 $PY - "$W/pred_bf16.csv" "$W/pred_fp32.csv" <<'EOF'
import sys, numpy as np, pandas as pd
a, b = (pd.read_csv(p).set_index("seq_id").sort_index() for p in sys.argv[1:3])
d = np.abs(a.to_numpy() - b[a.columns].to_numpy())
print(f"SCORING bf16 vs fp32: {len(a)} sequences x {a.shape[1]} classes, largest |difference| {d.max():.6f}, mean {d.mean():.2e}")
EOF
for p in bf16 fp32; do step 30 $PY ray_jobs/evaluate.py --submission $W/pred_$p.csv --labels $W/big/train_labels.csv; done
cp $W/pred_bf16.csv $W/pred_fp32.csv "$OUT/" 2>/dev/null
ls $W/run >>"$LOG" 2>&1
say "done in $SECONDS s"

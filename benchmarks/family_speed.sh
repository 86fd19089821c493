#!/usr/bin/env bash
# #18: seconds per epoch of the new families against the Gaussian VAE of the same data, in
# one run (ratios; the machine's CPU is printed with them). Each trains EPOCHS (3) epochs on
# the first LIMIT (10,000) training images; the per-epoch time is the median of the last
# EPOCHS-1 epochs' differences in metrics.jsonl.
set -euo pipefail
V=${VAELAB:-.venv/bin/vaelab}
OUT=${OUT:-runs/family-speed}
EPOCHS=${EPOCHS:-3}
LIMIT=${LIMIT:-10000}
rm -rf "$OUT"
for cfg in mnist_vae_iwae_arch mnist_vae2 mnist_vq; do
  $V train "configs/$cfg.toml" --set train.epochs="$EPOCHS" --set data.limit="$LIMIT" \
    --set train.precision='"fp32"' --out "$OUT/$cfg" --no-progress > /dev/null
done
grep -m1 "model name" /proc/cpuinfo || true
python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
def per_epoch(name):
    s = [json.loads(line)["seconds"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(b - a for a, b in zip(s, s[1:]))
base = per_epoch("mnist_vae_iwae_arch")
for name in ("mnist_vae_iwae_arch", "mnist_vae2", "mnist_vq"):
    print(f"{name:<22} {per_epoch(name):7.2f} s/epoch  x{per_epoch(name) / base:.2f} of the Gaussian VAE")
PY

#!/usr/bin/env bash
# #17: the CPU preset's training time against configs/mnist_vae_iwae_arch.toml's, side by
# side. Each config trains EPOCHS (6) epochs as shipped (precision, threads, all 60,000
# images), the two alternating ROUNDS (3) times; per run the median of its epochs' seconds
# after the first (metrics.jsonl), then the median over the rounds. The projected ratio
# multiplies by each config's own train.epochs (the preset trains fewer epochs).
set -euo pipefail
V=${VAELAB:-.venv/bin/vaelab}
OUT=${OUT:-runs/preset-ratio}
EPOCHS=${EPOCHS:-6}
ROUNDS=${ROUNDS:-3}
A=${A:-mnist_vamp_cpu}
B=${B:-mnist_vae_iwae_arch}
rm -rf "$OUT"
for r in $(seq "$ROUNDS"); do
  for cfg in "$B" "$A"; do
    $V train "configs/$cfg.toml" --set train.epochs="$EPOCHS" --out "$OUT/$cfg-$r" \
      --no-progress > /dev/null
  done
done
grep -m1 "model name" /proc/cpuinfo || true
python3 - "$OUT" "$A" "$B" "$ROUNDS" <<'PY'
import json, statistics, sys, tomllib
from pathlib import Path
out, a, b, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def per_epoch(run):
    s = [json.loads(line)["seconds"] for line in (out / run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(y - x for x, y in zip(s, s[1:]))
def row(cfg):
    sec = statistics.median(per_epoch(f"{cfg}-{r}") for r in range(1, rounds + 1))
    epochs = tomllib.loads(Path(f"configs/{cfg}.toml").read_text())["train"]["epochs"]
    precision = tomllib.loads((out / f"{cfg}-1" / "config.toml").read_text())["train"]["precision"]
    print(f"{cfg:<22} {sec:6.3f} s/epoch ({precision}) x {epochs} epochs = {sec * epochs / 60:6.1f} min")
    return sec * epochs
print(f"ratio {a} / {b}: {row(a) / row(b):.3f}")
PY

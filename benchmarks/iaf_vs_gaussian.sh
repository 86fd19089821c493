#!/usr/bin/env bash
# #17: the IAF posterior against the diagonal Gaussian, same networks (Burda et al. 2015:
# 784-200-200-50 tanh), data (dynamically binarised MNIST) and budget in epochs; NLL by
# importance sampling with k = 5,000 on the 10,000 test images (the protocol; about 7 min
# for the IAF on 2 cores). EPOCHS (default 100) sets the budget; the learning rate decays
# from 1e-3 to 1e-4 over it. Run again to continue (--continue).
set -euo pipefail
V=${VAELAB:-.venv/bin/vaelab}
OUT=${OUT:-runs/iaf}
EPOCHS=${EPOCHS:-100}
for name in gaussian iaf; do
  cfg=configs/mnist_vae_iwae_arch.toml
  [ "$name" = iaf ] && cfg=configs/mnist_iaf.toml
  $V train "$cfg" --set train.epochs="$EPOCHS" --out "$OUT/$name-$EPOCHS" --continue --no-progress
done
for name in gaussian iaf; do
  echo "== $name"
  $V eval "$OUT/$name-$EPOCHS" --no-progress
done

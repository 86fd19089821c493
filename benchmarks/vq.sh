#!/usr/bin/env bash
# #18: the VQ-VAE with its class-conditional code prior (configs/mnist_vq.toml) on grey-value
# MNIST: reconstruction MSE per pixel, codebook perplexity and use (`vaelab eval`), then
# the judge's reading of 1,000 samples per label (label accuracy, Fréchet distance, class
# entropy; needs runs/classifier: `vaelab classifier train --out runs/classifier`).
# EPOCHS (default: the config's 30) sets the budget; run again to continue.
set -euo pipefail
V=${VAELAB:-.venv/bin/vaelab}
OUT=${OUT:-runs/vq}
SETS=()
[ -n "${EPOCHS:-}" ] && SETS=(--set "train.epochs=$EPOCHS")
$V train configs/mnist_vq.toml "${SETS[@]}" --out "$OUT" --continue --no-progress
$V eval "$OUT" --no-progress
$V eval "$OUT" --generation --classifier runs/classifier --no-progress

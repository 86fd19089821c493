#!/usr/bin/env bash
# The generation table of #17: AE + Gaussian, AE / RAE / WAE + 10-component mixture, VAE, WAE on
# the networks and schedule of the generation table in benchmarks/RESULTS.md (MLP
# 784-512-256, 16-d codes, 30 epochs, grey-value MNIST), each judged by the shipped
# classifier (`vaelab classifier train --out runs/classifier`) on 5,000 samples at T = 1.
# Run again to continue: every training uses --continue.
set -euo pipefail
V=${VAELAB:-.venv/bin/vaelab}
OUT=${OUT:-runs/gen}
AE=(--set model.conditional=false --set model.kind=ae --set model.beta=1.0 --set train.loss=bce_sum)
train() { local name=$1; shift; $V train "$@" --out "$OUT/$name" --continue --no-progress; }
train ae configs/mnist_cvae.toml "${AE[@]}"
train ae-gmm10 configs/mnist_cvae.toml "${AE[@]}" --set model.expost.components=10
train vae configs/mnist_cvae.toml --set model.conditional=false --set model.beta=1.0
train rae configs/mnist_rae.toml
train wae configs/mnist_wae.toml
train wae-gmm10 configs/mnist_wae.toml --set model.expost.components=10
for name in ae ae-gmm10 vae rae wae wae-gmm10; do
  echo "== $name"
  $V eval "$OUT/$name" --generation --classifier runs/classifier -n 5000 --temperatures 1
done

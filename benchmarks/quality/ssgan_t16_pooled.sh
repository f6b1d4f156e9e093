#!/usr/bin/env bash
# SSGAN-L against ConcatX and 3DCNN on moving digits, T = 16 (docs/quality.md, "Codes on
# p's scale"): the pooled networks trained as an autoencoder for 18000 steps (three runs of
# 6000, each continuing the last with train.init_from), then, for each of the three
# models, 200 more autoencoder steps that end by standardising the codes of h and v
# (train.pretrain.standardize), and STEPS adversarial steps with a reconstruction weight
# of 10. About 60 minutes of autoencoder on 2 CPU cores, then 5-30 minutes per model.
#
#   benchmarks/quality/ssgan_t16_pooled.sh OUT [STEPS] [SEED]
#
# Each model's held-out MSE and analogy scores are in OUT/<model>-<seed>/*/eval.json.
set -euo pipefail
out=${1:?usage: ssgan_t16_pooled.sh OUT [STEPS] [SEED]}
steps=${2:-1000}
seed=${3:-0}
here=$(cd "$(dirname "$0")" && pwd)
eval_set=(--set 'eval=[video_reconstruction, motion_analogy]')

latest() { ls -d "$1"/*/ | tail -n 1; }

if [ ! -d "$out/autoencoder-3" ]; then
  from=()
  for part in 1 2 3; do
    ggdsl compile-and-train "$here/ssgan_t16_pooled.yaml" --quiet --out "$out/autoencoder-$part" --steps 0 \
      --set 'train.pretrain={steps: 6000}' "${from[@]}" "${eval_set[@]}"
    from=(--set "train.init_from=$(latest "$out/autoencoder-$part")")
  done
fi
weights=$(latest "$out/autoencoder-3")

for model in pooled pooled_concat pooled_3dcnn; do
  ggdsl compile-and-train "$here/ssgan_t16_$model.yaml" --quiet --out "$out/$model-$seed" --steps "$steps" \
    --set "train.init_from=$weights" --set "train.seed=$seed" \
    --set 'train.pretrain={steps: 200, standardize: true, examples: 2000, optimizer: {name: adam, learning_rate: 1.0e-4}}' \
    --set objective.latent_reconstruction=0 --set objective.reconstruction=10 \
    --set 'train.optimizer={name: adam, learning_rate: 1.0e-4, b1: 0.5, b2: 0.999}' \
    --set train.eval_every=500 "${eval_set[@]}"
done

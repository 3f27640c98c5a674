#!/usr/bin/env bash
# The issue-7 comparison: each method of the README's "Methods from the papers" against the
# plain recipe, on EmoDB, leave one speaker out, then one table of all of them.
#
#   eval/methods_emodb.sh [MANIFEST] [OUT]
#
# MANIFEST (default data/prepared/emodb/manifest.jsonl) comes from
#   emoreason prepare emodb --root EMODB --out data/prepared/emodb
#   emoreason evidence --manifest data/prepared/emodb/manifest.jsonl
#   emoreason rationales --manifest data/prepared/emodb/manifest.jsonl --writer template
# Each run resumes where it stopped, so the script can be run again after an interruption.
# The table is written to OUT/comparison.md (default runs/methods_emodb).
set -euo pipefail
manifest=${1:-data/prepared/emodb/manifest.jsonl}
out=${2:-runs/methods_emodb}
emoreason=${EMOREASON:-emoreason}

declare -A variants=(
  [plain]=""
  [layer_auto]="model.paralinguistic.layer=auto"
  [rationale_then_label]="prompt.rationale_order=rationale_then_label"
  [two_step]="prompt.two_step=true"
  [augment]="augment.p=0.5 augment.tempo=[0.9,1.1] augment.pitch=[-2,2]"
  [transcript_gold]="prompt.transcript=gold"
)
order=(plain layer_auto rationale_then_label two_step augment transcript_gold)
for name in "${order[@]}"; do
  echo "== $name: ${variants[$name]:-the plain recipe}"
  # shellcheck disable=SC2086  # the overrides are separate words
  "$emoreason" benchmark recipes/methods_emodb.yaml "data.train_manifest=$manifest" \
    "train.output_dir=$out/$name" ${variants[$name]}
done
"$emoreason" compare "${order[@]/#/$out/}" --out "$out/comparison.md"

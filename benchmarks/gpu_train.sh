#!/usr/bin/env bash
# Trains the brain-T1 model at 128² on a GPU for a fixed wall time, from the shipped 64² model grown by
# training.grow, and writes everything worth keeping into one output folder:
#   model/            the exported model folder (config.json, model.safetensors, discriminator.safetensors, card)
#   snapshots/<m>min  the generator exported after m minutes of training (for the quality-vs-time curve)
#   metrics.jsonl     the run's log (losses, ADA p, img/s per log interval)
#   throughput.csv    img/s against seconds of training
#   gpu.json          the device (GPU name), torch, precision choices, steps, images and median img/s
# It needs torch, torchvision, numpy, scipy, pillow, safetensors and matplotlib (no gradio, pydicom, nibabel),
# and the dataset file, built beforehand on any machine:
#   python -m training.data --dataset brain-t1 --size 128 --out data/brain-t1-128.npz
# Usage: bash benchmarks/gpu_train.sh [OUT]   (OUT defaults to $OUT). Settings by environment:
#   GPU_MINUTES (7.5) training wall time; GPU_SNAPSHOTS (4) exports at equal shares of it; GPU_STEPS caps
#   the steps (a smoke run); GPU_DATA, GPU_SOURCE, GPU_SIZE, GPU_WIDTH (the new blocks' channels), GPU_RUN
#   (the run folder, outside OUT: checkpoints stay there); GPU_ARGS, extra training.train options.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:?give an output folder or set OUT}}
minutes=${GPU_MINUTES:-7.5}
snapshots=${GPU_SNAPSHOTS:-4}
steps=${GPU_STEPS:-100000000}
data=${GPU_DATA:-data/brain-t1-128.npz}
source_model=${GPU_SOURCE:-weights/brain-t1-style-64}
size=${GPU_SIZE:-128}
run=${GPU_RUN:-runs/gpu-brain-t1-$size}
read -r -a extra <<< "${GPU_ARGS:-}"
[[ -f $data ]] || { echo "error: dataset $data not found (see the comment at the top of $0)" >&2; exit 2; }
[[ -e $run ]] && { echo "error: run folder $run exists; set GPU_RUN to a new one" >&2; exit 2; }
mkdir -p "$out/snapshots"
python -m training.grow "$source_model" --size "$size" --widths "${GPU_WIDTH:-32}" --out "$run/grown"
for k in $(seq 1 "$snapshots"); do
  limit=$(python -c "print(round($minutes * $k / $snapshots, 3))")
  export_to="$out/snapshots/${limit}min"
  if [[ $k == 1 ]]; then
    python -m training.train --data "$data" --arch style --condition level --size "$size" \
      --init-from "$run/grown" --ada-target 0.6 --steps "$steps" --max-minutes "$limit" --fid-every 0 \
      --sample-every 2000 --ckpt-every 1000 --log-every 50 --out "$run" --export "$export_to" \
      --model-id "brain-t1-style-$size" --title "Brain T1 MRI, axial, by level (style-based, $size²)" \
      --organ brain "${extra[@]}"
  else
    python -m training.train --resume "$run" --max-minutes "$limit" --export "$export_to"
  fi
done
cp -r "$export_to" "$out/model"
python -m benchmarks.gpu_report "$run" "$out"

"""GAN training: `config` (TrainConfig, recipes), `trainer` (G, D, one step, export net, checkpoint state),
`losses`, `augment` (DiffAugment, ADA), `discriminator`, `checkpoint` (safetensors), `distributed` (torchrun),
`precision` (bf16, channels-last, TF32, compile on CUDA), `inputs` (the training split), `loop` (a run),
`runlog` and `fidlog` (logs, curves, cheap FID), `export` (the model folder), `cli` (`python -m training.train`)."""

"""Publishing: `card` (the model card), `privacy` (what may leave the machine), `push` (the Hub, the Space),
`export_medigan` and `medigan_package` (a medigan model package)."""

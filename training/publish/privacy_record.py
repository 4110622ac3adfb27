"""What config.json records about differentially private training (training.gan.dp writes training.dp) and about a
push that accepted a privacy risk, and how the card says it. No torch: the card and the push check read it."""
from __future__ import annotations

from typing import Any

OVERRIDE_KEY = "privacy_risk_accepted"   # config.json extra: set by training.push --accept-privacy-risk


def dp_record(config: Any) -> dict[str, Any] | None:
    """config.json's training.dp, when the model was trained with --dp-epsilon."""
    record = (config.training or {}).get("dp")
    return record if isinstance(record, dict) and "epsilon" in record else None


def card_lines(config: Any) -> list[str]:
    """The card's statements about DP training and about an accepted privacy risk (none when neither applies)."""
    out = []
    dp = dp_record(config)
    if dp:
        stop = ("the budget was spent" if dp.get("budget_spent") else
                f"it stopped before the budget was spent (planned ε {dp['target_epsilon']:g})")
        out.append(
            f"**Differentially private training: (ε = {dp['epsilon']:.3g}, δ = {dp['delta']:.3g}).** The "
            f"discriminator was trained with DP-SGD ({dp['accountant']} accountant, Opacus {dp['opacus']}): "
            f"noise multiplier {dp['noise_multiplier']:.4g}, per-sample gradient norm clipped at "
            f"{dp['max_grad_norm']:g}, {dp['sampling']} at rate {dp['sample_rate']:.4g} of {dp['dataset_size']} "
            f"slices, {dp['steps']} steps; {stop}. The generator learnt only through the discriminator, so the "
            "weights (`model.safetensors`) and every image they make carry the same guarantee. It covers the "
            "weights only: the evaluation files and training curves in this folder were computed from the real "
            f"slices without it. Recipe for DP: {dp['recipe']}. The noise is drawn from torch's ordinary generator "
            "(Opacus' secure mode off).")
    override = (config.extra or {}).get(OVERRIDE_KEY)
    if isinstance(override, dict):
        out.append(f"**Published with `--accept-privacy-risk`.** The push would have been refused: "
                   f"{override.get('reason', '')}. The person publishing accepted that risk.")
    return out

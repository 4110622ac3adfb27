"""Differentially private training (`training.train --dp-epsilon E --dp-delta D`): DP-SGD on the discriminator with
Opacus, the only network that touches real images; the generator learns only through D's outputs on its own
images, so it is private by post-processing, and so are its EMA and every image it makes.

Opacus does the privacy work: per-sample gradients (GradSampleModule's hooks), clipping and Gaussian noise
(DPOptimizer around D's Adam), Poisson sampling of each real batch (UniformWithReplacementSampler: every training
slice joins a step's batch with probability q = batch size / slices), and the accountant (RDP) that turns the noise
multiplier, q and the number of steps into ε at the given δ. The noise multiplier is chosen so that the planned
`--steps` spend exactly the budget ε (or given with `--dp-noise-multiplier`); training stops when one more step
would spend more than ε.

The small-data recipe needs what Opacus cannot do, so DP mode changes it (DP_RECIPE, recorded on the card):
- no R1 penalty: its double backward through D has no per-sample gradient in Opacus;
- no spectral norm in D: a parametrised weight is not a parameter Opacus' layers compute per-sample gradients for;
- no batch norm in D: it mixes samples of a batch, so one slice's gradient depends on the others;
- no adaptive augmentation (ADA): its p follows D's outputs on real slices, a statistic of the data outside DP-SGD;
- no class balancing: it draws by class counts, not by Poisson sampling;
- fake images of a conditional model get uniformly drawn classes, not the real batch's (whose labels are data).
Clipping each sample's gradient (`--dp-max-grad-norm`) also bounds D, as spectral norm did.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

ACCOUNTANT = "rdp"
DP_RECIPE = dict(spectral_norm=False, d_batchnorm=False, r1=0.0, ada_target=0.0, balance_classes=False)
RECIPE_NOTE = ("DP-SGD on the discriminator (Opacus): no R1 penalty (double backward), no spectral norm or batch "
               "norm in D (no per-sample gradients / mixes samples), no adaptive augmentation (its p follows the "
               "data), Poisson-sampled real batches, uniformly drawn classes for generated images")


class DPError(ValueError):
    """A DP setting that cannot work; the message says which and why."""


def opacus_quiet() -> None:
    """Opacus warns about secure_mode (a cryptographically secure RNG) on every optimizer: said once in the card."""
    warnings.filterwarnings("ignore", message=".*[Ss]ecure.*", module="opacus")
    warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
    # torch notes that D's hooks fire with no input requiring gradients: the real images never do
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect "
                                              "to module outputs")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε spent by `steps` Poisson-sampled steps at this noise multiplier and rate, at δ (Opacus' RDP accountant)."""
    from opacus.accountants import RDPAccountant

    opacus_quiet()
    if steps <= 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, int(steps))]
    return float(accountant.get_epsilon(delta))


def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier whose `steps` steps stay within ε (Opacus' search, RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    opacus_quiet()
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=ACCOUNTANT))


def steps_within(target_epsilon: float, noise_multiplier: float, sample_rate: float, delta: float, limit: int) -> int:
    """The most steps (at most `limit`) whose ε stays within the target: training stops there."""
    low, high = 0, limit
    while low < high:   # ε grows with the steps: the last step count within budget
        mid = (low + high + 1) // 2
        if epsilon(noise_multiplier, sample_rate, mid, delta) <= target_epsilon:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class Budget:
    target_epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    dataset_size: int
    expected_batch_size: int
    max_steps: int

    @classmethod
    def plan(cls, cfg: Any, dataset_size: int) -> "Budget":
        """Noise from the budget and the planned --steps (unless --dp-noise-multiplier), and the steps it allows."""
        if not 0 < cfg.dp_delta < 1 / dataset_size:
            raise DPError(f"--dp-delta must be in (0, 1/slices) = (0, {1 / dataset_size:.3g}) for {dataset_size} "
                          "training slices (δ is the chance the guarantee fails; at 1/n or more it can leak a slice)")
        rate = min(1.0, cfg.batch_size / dataset_size)
        noise = cfg.dp_noise_multiplier or noise_for(cfg.dp_epsilon, cfg.dp_delta, rate, cfg.steps)
        limit = steps_within(cfg.dp_epsilon, noise, rate, cfg.dp_delta, cfg.steps)
        if limit == 0:
            raise DPError(f"--dp-epsilon {cfg.dp_epsilon:g} does not allow one step at noise multiplier {noise:.3g}")
        return cls(cfg.dp_epsilon, cfg.dp_delta, noise, cfg.dp_max_grad_norm, rate, dataset_size, cfg.batch_size, limit)

    def record(self, steps: int) -> dict[str, Any]:
        """config.json's training.dp: everything the accountant needs to recompute ε, and ε itself."""
        import opacus

        return {"epsilon": round(epsilon(self.noise_multiplier, self.sample_rate, steps, self.delta), 6),
                "delta": self.delta, "target_epsilon": self.target_epsilon,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "sample_rate": self.sample_rate, "expected_batch_size": self.expected_batch_size,
                "dataset_size": self.dataset_size, "steps": int(steps), "max_steps": self.max_steps,
                "budget_spent": steps >= self.max_steps, "accountant": f"opacus {ACCOUNTANT}",
                "opacus": opacus.__version__, "sampling": "Poisson (opacus UniformWithReplacementSampler)",
                "recipe": RECIPE_NOTE}


class PrivateDiscriminator:
    """D under DP-SGD: Opacus' per-sample gradient hooks on D itself (so D's state dict keeps its names), its
    DPOptimizer around D's Adam, and Poisson-sampled batch indices."""

    def __init__(self, D: torch.nn.Module, optimizer: torch.optim.Optimizer, budget: Budget,
                 generator: torch.Generator):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        opacus_quiet()
        self.budget = budget
        for layer in D.modules():   # the same function, but an in-place op on a hooked output breaks autograd
            if isinstance(layer, torch.nn.LeakyReLU):
                layer.inplace = False
        self.hooks = GradSampleModule(D, loss_reduction="mean")   # the hooks live on D's layers
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=budget.noise_multiplier,
                                     max_grad_norm=budget.max_grad_norm,
                                     expected_batch_size=budget.expected_batch_size, loss_reduction="mean")
        self.sampler = iter(UniformWithReplacementSampler(num_samples=budget.dataset_size,
                                                          sample_rate=budget.sample_rate, generator=generator,
                                                          steps=budget.max_steps * 1000))

    def batch_indices(self) -> torch.Tensor:
        """This step's real batch: each training slice with probability q (the size varies, may be 0)."""
        return torch.as_tensor(next(self.sampler), dtype=torch.int64)

    def spent(self, step: int) -> bool:
        return step >= self.budget.max_steps

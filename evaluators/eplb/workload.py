"""A synthetic, seeded expert-load workload for eplb (the reference's real one is not public).

The reference evaluator (mit-nms/Engram, SystemBench/ADRS/eplb) reads `expert-load.json`, a
recording of per-layer, per-expert token counts from a vLLM server running a DeepSeek-style MoE
model, and sums it over windows of 100 steps. That file is not published, so this module draws
windows of the same shape from a documented model instead:

* each MoE layer has a skew `sigma`, drawn uniformly from `sigma_range`; each expert a latent
  popularity `z` (standard normal); the routing probability of an expert in a window is the
  softmax of `sigma * z` over the layer's experts (a log-normal popularity profile: a few hot
  experts, many cold ones);
* between windows the popularity drifts: `z <- persistence * z + sqrt(1 - persistence^2) * noise`
  (an AR(1) process with unit variance), so the previous window predicts the next one only
  partly, as in serving traffic whose topics shift;
* a window's load is a multinomial draw of `tokens_per_window * top_k` expert assignments
  per layer from those probabilities (each token goes to `top_k` experts).

Everything comes from `numpy.random.default_rng(seed)` in a fixed order of draws, so a seed
gives the same windows on every machine with the same numpy major version. Scores on these
windows are NOT comparable with the paper's, which used the real recording.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WorkloadModel:
    seed: int
    num_layers: int = 58
    num_experts: int = 256
    num_windows: int = 10
    tokens_per_window: int = 409_600  # 100 steps of 4096 tokens
    top_k: int = 8
    sigma_range: tuple[float, float] = (0.4, 1.0)
    persistence: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.persistence <= 1.0:
            raise ValueError(f"persistence must be within [0, 1], got {self.persistence}")
        if self.num_windows < 2:
            raise ValueError("at least two windows are needed: one to plan from, one to score on")


def expert_load_windows(model: WorkloadModel) -> np.ndarray:
    """Token counts, shape (num_windows, num_layers, num_experts), dtype int64."""
    rng = np.random.default_rng(model.seed)
    sigma = rng.uniform(*model.sigma_range, size=(model.num_layers, 1))
    latent = rng.standard_normal((model.num_layers, model.num_experts))
    innovation = np.sqrt(1.0 - model.persistence ** 2)
    windows = np.empty((model.num_windows, model.num_layers, model.num_experts), dtype=np.int64)
    for window in range(model.num_windows):
        if window > 0:
            latent = model.persistence * latent + innovation * rng.standard_normal(latent.shape)
        logits = sigma * latent
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        windows[window] = rng.multinomial(model.tokens_per_window * model.top_k, probabilities)
    return windows

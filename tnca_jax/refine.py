"""Refining a grown note: best-of-N selection and optional post-processing of its log-mel.

Best-of-N: `generate.render` grows N candidates (growth seeds seed..seed+N-1) in one jitted,
vmapped call and vocodes them as one batch; `select` scores each against the reference
recording with one metric of `metrics.METRICS` and keeps the best.

Post-processing acts on the grown log-mel (the contract's log scale) before vocoding; each step
is off by default:
- gaussian_sigma: 2-D Gaussian blur, sigma in bands and frames;
- temporal_median: median over this many frames along time (removes frame-to-frame flicker of
  the stochastic update, keeps onsets);
- harmonic_gain: unsharp mask along frequency, x + g (x - blur(x)) with a 2-band Gaussian: bands
  above their neighbours (partials) rise, the valleys between them deepen.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tnca_jax import metrics
from tnca_jax.contract import MelContract

HARMONIC_SIGMA_BANDS = 2.0


@dataclasses.dataclass(frozen=True)
class Refinement:
    """How a note is refined (`tnca_jax.settings.GenerateSettings`; see the module docstring).

    Attributes:
      best_of: candidates grown; the best against the reference is kept (1: no selection).
      best_of_metric: the metric (a key of `metrics.METRICS`) that picks the best.
      gaussian_sigma, temporal_median, harmonic_gain: post-processing, 0 = off.
    """

    best_of: int = 1
    best_of_metric: str = "mel_l1_db"
    gaussian_sigma: float = 0.0
    temporal_median: int = 0
    harmonic_gain: float = 0.0

    @property
    def postprocesses(self) -> bool:
        return self.gaussian_sigma > 0 or self.temporal_median > 1 or self.harmonic_gain > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


NO_REFINEMENT = Refinement()


def postprocess(log_mel: np.ndarray, contract: MelContract, refinement: Refinement
                ) -> np.ndarray:
    """The enabled post-processing of `refinement` on log-mels [..., n_mels, frames]; the
    result stays in the contract's log range."""
    if not refinement.postprocesses:
        return log_mel
    from scipy import ndimage

    out = np.asarray(log_mel, np.float32)
    lead = (0,) * (out.ndim - 2)
    if refinement.gaussian_sigma > 0:
        out = ndimage.gaussian_filter(out, (*lead, refinement.gaussian_sigma,
                                            refinement.gaussian_sigma), mode="nearest")
    if refinement.temporal_median > 1:
        size = (1,) * (out.ndim - 1) + (refinement.temporal_median,)
        out = ndimage.median_filter(out, size=size, mode="nearest")
    if refinement.harmonic_gain > 0:
        envelope = ndimage.gaussian_filter1d(out, HARMONIC_SIGMA_BANDS, axis=-2, mode="nearest")
        out = out + refinement.harmonic_gain * (out - envelope)
    return np.clip(out, contract.log_min, contract.log_max)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Best-of-N: every candidate's growth seed and score, and the one kept.

    `to_dict` adds the gains of the kept candidate over N = 1, in the metric's own unit
    (positive = better): over the first candidate (what N = 1 gives for this seed) and over
    the candidates' mean (what N = 1 gives on average).
    """

    metric: str
    seeds: list[int]
    scores: list[float | None]
    chosen: int

    def to_dict(self) -> dict:
        badness = [metrics.badness(self.metric, score) for score in self.scores]
        best = badness[self.chosen]
        finite = [b for b in badness if math.isfinite(b)]
        return {
            "n": len(self.seeds), "metric": self.metric, "seeds": self.seeds,
            "scores": self.scores, "chosen_seed": self.seeds[self.chosen],
            "best": self.scores[self.chosen], "first": self.scores[0],
            "gain_over_first": badness[0] - best,
            "gain_over_mean": (sum(finite) / len(finite) - best) if finite else None,
        }


def select(reference: np.ndarray, candidates: np.ndarray, seeds: list[int],
           contract: MelContract, metric: str) -> Selection:
    """Score candidate waveforms [N, samples] against `reference`; keep the best."""
    scores = [getattr(result, metric) for result in
              metrics.compare_many(reference, list(candidates), contract, only={metric})]
    chosen = min(range(len(scores)), key=lambda i: metrics.badness(metric, scores[i]))
    return Selection(metric=metric, seeds=seeds, scores=scores, chosen=chosen)

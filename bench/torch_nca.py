"""PyTorch reference NCA doing the same work as tnca_jax's train step, for benchmarks only.

Same cell: depthwise identity/Sobel-time/Sobel-frequency/Laplacian perception, 1x1 conv to
`hidden` plus a per-band embedding, ReLU, zero-initialised 1x1 conv back, stochastic update,
alive mask (3x3 max-pool of alpha > 0.1) before and after; L1 loss on the value channel
after `steps` steps; Adam.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tnca_jax.cells import ALIVE_THRESHOLD, ALPHA, PERCEPTION_KERNELS, VALUE


class TorchNCA(torch.nn.Module):
    def __init__(self, n_bands: int, channels: int, hidden: int, fire_rate: float):
        super().__init__()
        kernels = torch.tensor(np.asarray(PERCEPTION_KERNELS))  # [4, 3, 3]
        # Depthwise weights [4C, 1, 3, 3]: output c*4 + k applies filter k to channel c.
        self.register_buffer("perception", kernels.repeat(channels, 1, 1)[:, None])
        self.channels, self.fire_rate = channels, fire_rate
        self.hidden = torch.nn.Conv2d(4 * channels, hidden, 1)
        self.band_embedding = torch.nn.Parameter(torch.zeros(1, hidden, n_bands, 1))
        self.out = torch.nn.Conv2d(hidden, channels, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def alive(self, state: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(state[:, ALPHA:ALPHA + 1], 3, 1, 1) > ALIVE_THRESHOLD

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """One step on [B, C, F, T]."""
        pre = self.alive(state)
        per = F.conv2d(state, self.perception, padding=1, groups=self.channels)
        # conv2d with groups gives [B, C*4] channel-major; regroup to filter-major.
        b, _, f, t = per.shape
        per = per.reshape(b, self.channels, 4, f, t).transpose(1, 2).reshape(b, -1, f, t)
        delta = self.out(torch.relu(self.hidden(per) + self.band_embedding))
        fire = (torch.rand(b, 1, f, t, device=state.device) < self.fire_rate).to(state.dtype)
        state = state + delta * fire
        return state * (pre & self.alive(state)).to(state.dtype)


def make_step(model: TorchNCA, target: torch.Tensor, steps: int, compiled: bool):
    """One training iteration: grow `steps` steps from `seed`, L1 on the value channel, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    rollout = model
    if compiled:
        rollout = torch.compile(model)

    def step(seed: torch.Tensor) -> float:
        state = seed
        for _ in range(steps):
            state = rollout(state)
        loss = (state[:, VALUE] - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step

"""Range observers for static activation quantization: running min/max or its moving average."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RangeObserver(nn.Module):
    """Track the per-tensor range ``[min_val, max_val]`` of the tensors passed to :meth:`forward`.

    With ``averaging_constant=None`` the range is the running extreme over all observed batches
    (``min_val <- min(min_val, min(x))``). With ``averaging_constant=c`` it is an exponential moving average of
    per-batch extremes (``min_val <- min_val + c (min(x) - min_val)``), the first batch initialising it
    (Jacob et al., 2018, sec. 3.1). The state lives in buffers, so it is saved and restored with the model.

    Args:
        averaging_constant: EMA weight ``c`` in ``(0, 1]``; ``None`` for running min/max.
    """

    min_val: Tensor
    max_val: Tensor

    def __init__(self, averaging_constant: float | None = None) -> None:
        super().__init__()
        if averaging_constant is not None and not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant={averaging_constant} must be in (0, 1] or None.")
        self.averaging_constant = averaging_constant
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    @property
    def initialized(self) -> bool:
        """Whether at least one batch was observed."""
        return bool(torch.isfinite(self.min_val) & torch.isfinite(self.max_val))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Update the range with ``x`` and return ``x`` unchanged."""
        lo, hi = torch.aminmax(x.detach().float())
        if not self.initialized:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        elif self.averaging_constant is None:
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        else:
            self.min_val.add_(self.averaging_constant * (lo - self.min_val))
            self.max_val.add_(self.averaging_constant * (hi - self.max_val))
        return x

    def reset(self) -> None:
        """Forget everything observed."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    def extra_repr(self) -> str:
        kind = "minmax" if self.averaging_constant is None else f"moving_average(c={self.averaging_constant})"
        return f"{kind}, min_val={self.min_val.item():.4g}, max_val={self.max_val.item():.4g}"

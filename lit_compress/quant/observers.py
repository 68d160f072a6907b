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


@torch.no_grad()
def all_reduce_ranges(observers: list[RangeObserver]) -> None:
    """Combine the ranges every process observed, in place, so that all ranks hold the same (collective).

    Running min/max observers take the extreme over ranks (``min_val <- min_r min_val_r``), which is exactly the
    range over the union of all ranks' batches when called after every observed step. Moving-average
    observers take the mean over ranks, which equals one EMA step with the mean of the ranks' batch extremes
    (``m + c (mean_r x_r - m) = mean_r (m + c (x_r - m))``). Without it, DDP's buffer broadcast would keep
    rank 0's ranges only. A no-op outside ``torch.distributed``.
    """
    import torch.distributed as dist

    if not observers or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for kind in ({False}, {True}):  # running min/max first, then moving averages
        group = [o for o in observers if (o.averaging_constant is not None) in kind]
        if not group:
            continue
        lows = torch.stack([o.min_val.float() for o in group])
        highs = torch.stack([o.max_val.float() for o in group])
        if True in kind:
            both = torch.stack([lows, highs])
            dist.all_reduce(both, op=dist.ReduceOp.SUM)
            lows, highs = both / dist.get_world_size()
        else:
            dist.all_reduce(lows, op=dist.ReduceOp.MIN)
            dist.all_reduce(highs, op=dist.ReduceOp.MAX)
        for observer, lo, hi in zip(group, lows, highs, strict=True):
            observer.min_val.copy_(lo)
            observer.max_val.copy_(hi)

"""``ExactResume``: a fit resumed from a mid-epoch checkpoint continues exactly as the uninterrupted fit would
have: same random draws (dropout masks, the next epochs' shuffles) and same position in the epoch's order."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


class ExactResume(Callback):
    """Make a resumed fit continue exactly: random state in every checkpoint, and the training loader's position.

    1. The Python, NumPy and torch (CPU, and CUDA when present) generator states are saved in every checkpoint
       and restored when a fit resumes from one. Lightning checkpoints hold weights, optimizer, schedulers, loop
       progress and callback states but no random state, so without this a run resumed in the middle of an epoch
       draws other dropout masks and shuffles than the run it continues. Stored as tensors and plain numbers (it
       loads with ``weights_only=True``); restored when the checkpoint is loaded, after ``setup`` (which may seed).
    2. A loader with ``state_dict``/``load_state_dict``
       (:class:`~lit_compress.data.resumable.ResumableLoader`) gets its saved state even when the training
       loader was built before the checkpoint's loop state was read — which happens whenever
       ``configure_optimizers`` asks ``trainer.estimated_stepping_batches`` (a warm-up schedule does), and then
       Lightning never hands the loader its state. Applied at ``on_train_start``, before the first batch.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._pending is not None:  # after the loader's iterator drew its base seed, as at the saved point
            _set_random_state(self._pending)
            self._pending = None
        fit_loop = trainer.fit_loop
        if getattr(fit_loop, "_combined_loader_states_to_load", None) and fit_loop._combined_loader is not None:
            fit_loop._combined_loader._load_state_dicts(fit_loop._combined_loader_states_to_load)
            fit_loop._combined_loader_states_to_load = []

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }  # fmt: skip
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict  # applied at on_train_start: building the loader's iterator draws a seed


def _set_random_state(state_dict: dict[str, Any]) -> None:
    torch.set_rng_state(state_dict["torch"])
    np_state = state_dict["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))  # fmt: skip
    py = state_dict["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state_dict and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state_dict["cuda"])

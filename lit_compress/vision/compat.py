"""``torchvision`` importable next to the CPU-only torch wheel: ``from lit_compress.vision.compat import torchvision``.

The torchvision 0.28.0 wheel on PyPI ships its C++ operators (``torchvision/_C.so``) linked against CUDA
libraries (``libtorch_cuda.so``, ``libc10_cuda.so``) that the ``torch==2.13.0+cpu`` build lacks. torchvision
skips the failed load, but ``torchvision/_meta_registrations.py`` then registers fake kernels for
``torchvision::nms`` without checking, and ``import torchvision`` stops with ``RuntimeError: operator
torchvision::nms does not exist``. Models (``torchvision.models``) and transforms (``torchvision.transforms.v2``)
are pure Python and do not need those operators.

The fix defines the two schemas that file looks up (``torchvision::nms`` and ``torchvision::qnms``, as in
torchvision's ``csrc/ops/nms.cpp``) with ``torch.library.Library("torchvision", "DEF")``, only when the C++
library did not define them, right before ``torchvision._meta_registrations`` is imported (a
``sys.meta_path`` finder, :class:`TorchvisionSchemaHook`, that finds nothing itself).

Two ways it is installed:

* ``make install`` writes ``lit_compress_torchvision.pth`` into the venv's site-packages
  (``python lit_compress/vision/compat.py install-hook``), which installs the finder at interpreter start,
  without importing torch. Every ``import torchvision`` then works, including the ones inside torchmetrics
  (imported by Lightning), transformers and ``torch.onnx``.
* Importing this module installs the finder and imports torchvision (again, dropping a half-imported one
  from ``sys.modules``, if an earlier import failed).

Caveat: the schemas have no kernels, so torchvision's detection ops (``torchvision.ops.nms``,
``batched_nms``; ``roi_align`` and ``deform_conv2d`` are not defined at all) raise if called. Nothing in
lit_compress calls them. On a torch build where ``_C.so`` loads, nothing is defined and nothing changes.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

INSTALL_HINT = 'torchvision is not installed; run: pip install -c requirements.lock "lit-compress[vision]"'
PTH_NAME = "lit_compress_torchvision.pth"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def define_missing_schemas() -> Any:
    """Define ``torchvision::nms`` / ``qnms`` (schemas only, no kernels) where torchvision's C++ ops did not.

    Returns:
        The ``torch.library.Library`` that holds the definitions (keep it alive: it deregisters them when
        garbage-collected), or None when both schemas already exist.
    """
    import torch

    missing = [name for name in _SCHEMAS if not _has_op(torch, name)]
    if not missing:
        return None
    library = torch.library.Library("torchvision", "DEF")
    for name in missing:
        library.define(_SCHEMAS[name])
    return library


def _has_op(torch: ModuleType, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


class TorchvisionSchemaHook(MetaPathFinder):
    """A ``sys.meta_path`` finder that defines the missing schemas right before ``torchvision._meta_registrations``.

    It never finds a module itself (``find_spec`` returns None), so the normal finders import everything.
    """

    TARGET = "torchvision._meta_registrations"

    def __init__(self) -> None:
        self.library: Any = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        """Define the schemas when ``fullname`` is the meta-registration module; find nothing."""
        if fullname == self.TARGET and self.library is None:
            self.library = define_missing_schemas()
        return None


def install_hook() -> TorchvisionSchemaHook:
    """Put one :class:`TorchvisionSchemaHook` first in ``sys.meta_path`` (idempotent) and return it."""
    for finder in sys.meta_path:
        if type(finder).__name__ == TorchvisionSchemaHook.__name__ and hasattr(finder, "library"):
            return finder
    hook = TorchvisionSchemaHook()
    sys.meta_path.insert(0, hook)
    return hook


def import_torchvision() -> ModuleType:
    """Import torchvision with :func:`install_hook` active (re-importing it if an earlier import failed half-way).

    Returns:
        The ``torchvision`` module (``models`` and ``transforms.v2`` work; detection ops raise if called).

    Raises:
        ImportError: torchvision is not installed (the message names the pip command).
    """
    install_hook()
    try:
        import torchvision as tv
    except ModuleNotFoundError as error:
        if error.name != "torchvision":
            raise
        raise ImportError(INSTALL_HINT) from None
    except RuntimeError as error:  # imported once before the hook: drop the half-imported modules, retry
        if "torchvision::" not in str(error):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision as tv
    return tv


def write_pth(site_packages: str | Path) -> Path:
    """Write ``lit_compress_torchvision.pth`` (installs the hook at interpreter start) into ``site_packages``."""
    target = Path(site_packages) / PTH_NAME
    source = Path(__file__).resolve()
    target.write_text(f"import runpy; runpy.run_path({str(source)!r}, run_name='lit_compress_torchvision_hook')"
                      "['install_hook']()\n")
    return target


if __name__ == "lit_compress.vision.compat":
    torchvision = import_torchvision()
elif __name__ == "__main__":
    if sys.argv[1:] != ["install-hook"]:
        sys.exit("usage: python lit_compress/vision/compat.py install-hook")
    import sysconfig

    print(write_pth(sysconfig.get_paths()["purelib"]))

__all__ = ["INSTALL_HINT", "TorchvisionSchemaHook", "define_missing_schemas", "import_torchvision", "install_hook",
           "torchvision", "write_pth"]

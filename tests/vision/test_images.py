"""torchvision next to the CPU torch (compat), the IDX reader, Fashion-MNIST and ImageClassificationDataModule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_compat_gives_a_working_torchvision() -> None:
    from lit_compress.vision.compat import torchvision

    from torchvision.transforms import v2

    model = torchvision.models.resnet18(num_classes=7).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    crop = v2.Compose([v2.RandomCrop(20, padding=2), v2.RandomHorizontalFlip()])
    assert crop(torch.zeros(1, 28, 28)).shape == (1, 20, 20)
    assert hasattr(torch.ops.torchvision, "nms")  # the schema exists (from _C.so or from compat)


def _bare_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` with site-packages on sys.path but its .pth files (so the venv's hook) not processed."""
    import sysconfig

    prelude = f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r}); "
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_compat_hook_is_what_lets_import_torchvision_work(tmp_path: Path) -> None:
    """Fresh interpreters without the .pth: the CPU-only torch fails ``import torchvision``; with the hook it works."""
    plain = _bare_python("import torch, torchvision", tmp_path)
    if plain.returncode == 0:
        pytest.skip("torchvision's C++ ops load on this torch build; the hook has nothing to fix")
    assert "torchvision::nms does not exist" in plain.stderr
    hooked = _bare_python(f"import runpy; runpy.run_path({str(ROOT / 'lit_compress/vision/compat.py')!r}, "
                          "run_name='hook')['install_hook'](); import torchvision; "
                          "print(torchvision.models.mobilenet_v2.__name__)", tmp_path)
    assert hooked.returncode == 0, hooked.stderr[-500:]
    assert hooked.stdout.strip() == "mobilenet_v2"


def test_make_install_wrote_the_pth_hook() -> None:
    from lit_compress.vision.compat import PTH_NAME

    if not (Path(sys.prefix) / ".lit-compress-installed").exists():
        pytest.skip("not the environment make install built")
    import sysconfig

    assert (Path(sysconfig.get_paths()["purelib"]) / PTH_NAME).read_text().startswith("import runpy;")

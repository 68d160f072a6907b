"""torchvision next to the CPU torch (compat), the IDX reader, Fashion-MNIST and ImageClassificationDataModule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gzip
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lit_compress.data.resumable import ResumableLoader
from lit_compress.errors import UserInputError
from lit_compress.vision.images import (FASHION_MNIST_DIR, FASHION_MNIST_ENV, FASHION_MNIST_LABELS,
                                        FASHION_MNIST_MEAN, FASHION_MNIST_STD, ImageClassificationDataModule,
                                        load_fashion_mnist, read_idx)

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


# -- IDX reader -------------------------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_hand_written_files(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    counts = np.array([7, -1, 65536], dtype=np.int32)  # 0x0C: big-endian int32 on disk
    for name, array, code in (("images", images, 0x08), ("counts", counts, 0x0C)):
        data = _idx_bytes(array, code)
        (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    assert np.array_equal(read_idx(tmp_path / "images"), images)
    got = read_idx(tmp_path / "counts")
    assert got.tolist() == [7, -1, 65536] and got.dtype == np.int32


def test_read_idx_rejects_bad_files_in_one_line(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((2, 2), dtype=np.uint8), 0x08)
    cases = {"magic": b"\x01\x02" + good[2:], "truncated": good[:-1], "long": good + b"\0",
             "gzip": gzip.compress(good)[:-6]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserInputError) as err:
            read_idx(tmp_path / name)
        assert "\n" not in str(err.value) and str(tmp_path / name) in str(err.value)


# -- a synthetic image folder -----------------------------------------------------------------------------------
CLASSES = ("cat", "dog", "eel")


def _write_folder(root: Path, per_class: int, size: tuple[int, int] = (12, 10), noise: bool = False) -> None:
    """``root/<class>/<i>.png``: RGB gray images of value 40*class + i (or noise in 1..255), ``size`` = (W, H)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(1, 256, (size[1], size[0], 3), dtype=np.uint8) if noise else \
                np.full((size[1], size[0], 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_folder_source_shapes_normalization_and_splits(tmp_path: Path) -> None:
    _write_folder(tmp_path / "imgs", per_class=8)
    dm = ImageClassificationDataModule(f"folder:{tmp_path / 'imgs'}", image_size=8, val_size=4, batch_size=5)
    assert dm.label_names == list(CLASSES) and dm._splits is None  # known before setup, for the CLI link
    sizes = {s: dm.num_examples(s) for s in ("train", "validation", "test")}
    assert sizes == {"train": 16, "validation": 4, "test": 4}  # 24 images, 4 + 4 held out (no split folders)
    pixels, labels = dm.dataset("train").pixels, dm.labels("train")
    assert pixels.shape == (16, 1, 8, 8)
    # a constant gray image of value v becomes (v / 255 - 0.5) / 0.5 everywhere (default mean/std 0.5)
    values = sorted({round(float(p.mean()) * 255 / 2 + 127.5) for p in dm.examples("test") + dm.examples("train")
                     + dm.examples("validation")})
    assert values == sorted(40 * c + i for c in range(3) for i in range(8))
    assert torch.allclose(pixels, pixels[:, :, :1, :1].expand_as(pixels))
    for x, y in zip(dm.examples("validation"), dm.labels("validation")):
        assert round((float(x[0, 0, 0]) * 0.5 + 0.5) * 255) // 40 == y  # class c has values 40c .. 40c + 7
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(dm.train_dataloader(), ResumableLoader)
    assert set(batch) == {"pixel_values", "labels", "idx"} and batch["pixel_values"].shape == (5, 1, 8, 8)
    ds = dm.dataset("train")
    for x, y, i in zip(batch["pixel_values"], batch["labels"], batch["idx"]):
        assert torch.equal(x, ds.pixels[i]) and y == ds.labels[i]  # idx is the row in its split
    rgb = ImageClassificationDataModule(f"folder:{tmp_path / 'imgs'}", image_size=6, channels=3, val_size=0.25,
                                        mean=[0.1, 0.2, 0.3], std=0.25)
    x = rgb.examples("test")[0]
    assert x.shape == (3, 6, 6) and rgb.num_examples("validation") == 6
    v = (float(x[0, 0, 0]) * 0.25 + 0.1) * 255
    assert [float(x[c, 0, 0]) for c in range(3)] == pytest.approx([(v / 255 - m) / 0.25 for m in (0.1, 0.2, 0.3)])


def test_split_folders_are_used_as_given(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        _write_folder(tmp_path / split, per_class=n)
    dm = ImageClassificationDataModule(f"folder:{tmp_path}", image_size=8, val_size=5000, eval_limit=4)
    assert {s: dm.num_examples(s) for s in ("train", "validation", "test")} == {"train": 9, "validation": 4,
                                                                                "test": 3}
    assert dm.labels("test") == [0, 1, 2]


def test_seeded_holdout_is_deterministic(tmp_path: Path) -> None:
    _write_folder(tmp_path, per_class=10)

    def order(seed: int) -> list[float]:
        dm = ImageClassificationDataModule(f"folder:{tmp_path}", image_size=4, val_size=5, seed=seed, train_limit=12)
        assert dm.num_examples("train") == 12
        return [round(float(x.mean()), 4) for x in dm.examples("train") + dm.examples("validation")]

    assert order(1) == order(1) and order(1) != order(2)


def test_augment_changes_train_batches_only(tmp_path: Path) -> None:
    _write_folder(tmp_path, per_class=6, size=(8, 8), noise=True)
    kwargs = dict(dataset=f"folder:{tmp_path}", image_size=8, val_size=3, batch_size=12)
    plain, augmented = ImageClassificationDataModule(**kwargs), ImageClassificationDataModule(augment=True, **kwargs)
    for split in ("train", "validation", "test"):
        assert torch.equal(plain.dataset(split).pixels, augmented.dataset(split).pixels)  # stored once, unaugmented
    assert torch.equal(next(iter(plain.val_dataloader()))["pixel_values"],
                       next(iter(augmented.val_dataloader()))["pixel_values"])
    torch.manual_seed(0)
    batch = next(iter(augmented.train_dataloader()))
    stored = augmented.dataset("train").pixels[batch["idx"]]
    assert batch["pixel_values"].shape == stored.shape and not torch.equal(batch["pixel_values"], stored)
    black = (0 - 0.5) / 0.5  # the noise has no black pixel: black ones come from the crop's padding
    assert bool((batch["pixel_values"] == black).any())


def test_train_loader_resumes_mid_epoch_in_the_same_order(tmp_path: Path) -> None:
    _write_folder(tmp_path, per_class=6)
    kwargs = dict(dataset=f"folder:{tmp_path}", image_size=4, val_size=2, batch_size=3)
    torch.manual_seed(5)
    whole = [b["idx"].tolist() for b in ImageClassificationDataModule(**kwargs).train_dataloader()]
    torch.manual_seed(5)
    first = ImageClassificationDataModule(**kwargs).train_dataloader()
    batches = iter(first)
    head = [next(batches)["idx"].tolist() for _ in range(2)]
    resumed = ImageClassificationDataModule(**kwargs).train_dataloader()  # a restarted process
    resumed.load_state_dict(first.state_dict())
    assert len(whole) == 5 and head + [b["idx"].tolist() for b in resumed] == whole


# -- a Hugging Face dataset saved to disk -----------------------------------------------------------------------
def test_hf_dataset_from_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["no", "yes"])})

    def split(values: list[int]) -> Any:
        images = [Image.fromarray(np.full((5, 5), v, dtype=np.uint8)) for v in values]
        return datasets.Dataset.from_dict({"image": images, "label": [v % 2 for v in values]}, features=features)

    datasets.DatasetDict({"train": split(list(range(10, 30))), "test": split([100, 101, 102])}).save_to_disk(
        str(tmp_path / "ds"))
    dm = ImageClassificationDataModule(f"hf:{tmp_path / 'ds'}", image_size=5, val_size=0.25, mean=0.0, std=1.0)
    assert dm.label_names == ["no", "yes"]
    assert {s: dm.num_examples(s) for s in ("train", "validation", "test")} == {"train": 15, "validation": 5,
                                                                                "test": 3}
    assert [round(float(x.mean()) * 255) for x in dm.examples("test")] == [100, 101, 102]
    assert dm.labels("test") == [0, 1, 0]
    for x, y in zip(dm.examples("train"), dm.labels("train")):
        assert round(float(x.mean()) * 255) % 2 == y


# -- Fashion-MNIST (the Debian package) -------------------------------------------------------------------------
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_files_and_default_splits() -> None:
    data = load_fashion_mnist()
    assert data["train"][0].shape == (60000, 28, 28) and data["test"][0].shape == (10000, 28, 28)
    assert data["train"][0].dtype == np.uint8 and data["test"][1].dtype == np.int64
    assert np.bincount(data["test"][1]).tolist() == [1000] * 10
    x = data["train"][0] / 255.0
    assert (x.mean(), x.std()) == pytest.approx((FASHION_MNIST_MEAN, FASHION_MNIST_STD), abs=1e-4)
    dm = ImageClassificationDataModule(train_limit=1000)
    assert dm.label_names == list(FASHION_MNIST_LABELS) and len(dm.label_names) == 10
    assert {s: dm.num_examples(s) for s in ("train", "validation", "test")} == {"train": 1000, "validation": 5000,
                                                                                "test": 10000}
    assert torch.equal(torch.tensor(dm.labels("test")), torch.as_tensor(data["test"][1]))
    expected = (data["test"][0][0] / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert torch.allclose(dm.examples("test")[0][0], torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)


# -- bad input --------------------------------------------------------------------------------------------------
def test_bad_sources_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_compress.vision.images as images

    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    (tmp_path / "empty").mkdir()
    _write_folder(tmp_path / "few", per_class=2)
    cases = {"mnist-ish": "known image source", "fashion-mnist": "apt-get install dataset-fashion-mnist",
             f"folder:{tmp_path / 'missing'}": "does not exist", f"folder:{tmp_path / 'empty'}": "no .png/.jpg",
             f"hf:{tmp_path / 'missing'}": "cannot load dataset", f"folder:{tmp_path / 'few'}": "smaller val_size"}
    for dataset, words in cases.items():
        with pytest.raises(UserInputError) as err:
            ImageClassificationDataModule(dataset, val_size=3).setup()
        assert words in str(err.value) and "\n" not in str(err.value), dataset
    with pytest.raises(UserInputError, match="fix std"):
        ImageClassificationDataModule(std=[0.3, 0.3])


# -- lit-compress fit: the datamodule by class_path, its label names linked into the model -------------------------
class TinyImageClassifier(L.LightningModule):
    """A linear classifier over flattened pixels that records the label names the CLI links in."""

    def __init__(self, labels: list[str] | None = None, pixels: int = 64) -> None:
        super().__init__()
        self.labels = labels
        self.linear = torch.nn.Linear(pixels, len(labels or [0, 1]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.linear(batch["pixel_values"].flatten(1))
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lit_compress_fit_links_label_names_and_trains(tmp_path: Path) -> None:
    from lit_compress.cli import trainer_cli

    _write_folder(tmp_path / "imgs", per_class=4)
    config = tmp_path / "fit.yaml"
    config.write_text(f"""\
model:
  class_path: {__name__}.TinyImageClassifier
data:
  class_path: lit_compress.vision.images.ImageClassificationDataModule
  init_args:
    dataset: folder:{tmp_path / 'imgs'}
    image_size: 8
    val_size: 2
    mean: [0.25]
    augment: true
    batch_size: 4
trainer:
  max_steps: 2
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 0
  default_root_dir: {tmp_path}
""")
    cli = trainer_cli(["--config", str(config)], run=False)
    assert cli.model.labels == list(CLASSES) and cli.datamodule.mean == [0.25]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2

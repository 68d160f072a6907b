"""Image classification data: Fashion-MNIST (offline), class-per-folder images, Hugging Face image datasets.

Every source is read once into ``{split: (images, labels)}`` plus the ordered label names, then preprocessed
once into normalized float tensors ``(N, C, H, W)`` in memory (``N*C*H*W*4`` bytes: Fashion-MNIST at 28x28x1
is 220 MB). Batches are ``{"pixel_values", "labels", "idx"}``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lit_compress.data.resumable import ResumableLoader, SplitLoaders
from lit_compress.errors import InputNotFoundError, UserInputError

FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot")
#: Where the Debian package ``dataset-fashion-mnist`` puts the four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "LIT_COMPRESS_FASHION_MNIST"
#: Mean and standard deviation of Fashion-MNIST's 60k training pixels scaled to [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_DIRS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
Raw = tuple[dict[str, tuple[Any, np.ndarray]], list[str]]


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped): magic ``0 0 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, data.

    Raises:
        UserInputError: the file is not a complete IDX file.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserInputError(f"{path} is a corrupt gzip file ({err}); replace it with a good copy.") from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise UserInputError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); pass an IDX file.")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:start], ">u4")) if len(raw) >= start else ()
    if len(shape) != ndim or len(raw) != start + int(np.prod(shape)) * dtype.itemsize:
        raise UserInputError(f"{path} is truncated or too long for its IDX header; replace it with a good copy.")
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(directory: Path, stem: str) -> Path | None:
    return next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """The first directory holding the four Fashion-MNIST IDX files (``.gz`` or plain).

    Searched in order: the Debian path :data:`FASHION_MNIST_DIR`, ``root``, ``$LIT_COMPRESS_FASHION_MNIST``.

    Raises:
        InputNotFoundError: none of them has the files (the message names the apt package).
    """
    candidates = [FASHION_MNIST_DIR, root, os.environ.get(FASHION_MNIST_ENV)]
    for directory in (Path(c) for c in candidates if c):
        if all(_idx_file(directory, stem) for files in _FASHION_FILES.values() for stem in files):
            return directory
    raise InputNotFoundError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}, root={root} or ${FASHION_MNIST_ENV}; "
                             "install it with `apt-get install dataset-fashion-mnist` or point root at the IDX files.")


def load_fashion_mnist(root: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``{"train": (uint8 (60000, 28, 28), int64 (60000,)), "test": (... 10000 ...)}``."""
    directory = fashion_mnist_dir(root)
    out = {}
    for split, (images_stem, labels_stem) in _FASHION_FILES.items():
        images, labels = read_idx(_idx_file(directory, images_stem)), read_idx(_idx_file(directory, labels_stem))
        if images.ndim != 3 or labels.shape != images.shape[:1] or images.dtype != np.uint8:
            raise UserInputError(f"Fashion-MNIST {split} files in {directory} do not match (images {images.shape}, "
                                 f"labels {labels.shape}); reinstall dataset-fashion-mnist.")
        out[split] = (images, labels.astype(np.int64))
    return out


def _load_folder(path: Path) -> Raw:
    if not path.is_dir():
        raise InputNotFoundError(f"image folder {path} does not exist; pass dataset: folder:<dir with one sub-folder "
                                 "per class>.")
    split_dirs = {_SPLIT_DIRS[p.name]: p for p in path.iterdir() if p.is_dir() and p.name in _SPLIT_DIRS}
    roots = split_dirs if "train" in split_dirs else {"train": path}
    names = sorted(p.name for p in roots["train"].iterdir() if p.is_dir())
    out: dict[str, tuple[Any, np.ndarray]] = {}
    for split, directory in roots.items():
        files, labels = [], []
        for class_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
            if class_dir.name not in names:
                raise UserInputError(f"class folder {class_dir} is not among the train classes {names}; add it to "
                                     "train or remove it.")
            found = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
            files += found
            labels += [names.index(class_dir.name)] * len(found)
        if not files:
            raise UserInputError(f"no .png/.jpg images under {directory}/<class>/; put one sub-folder per class there.")
        out[split] = (files, np.asarray(labels, dtype=np.int64))
    return out, names


def _load_hf(name: str, image_column: str, label_column: str) -> Raw:
    import datasets

    try:
        if (Path(name) / "dataset_dict.json").is_file() or (Path(name) / "state.json").is_file():
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name)
    except (OSError, ConnectionError, ValueError) as err:
        raise UserInputError(f"cannot load dataset hf:{name} ({err}); pass a save_to_disk directory or a cached "
                             "dataset name.") from err
    splits = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    splits = {_SPLIT_DIRS.get(s, s): ds for s, ds in splits.items()}
    if "train" not in splits:
        raise UserInputError(f"hf:{name} has no train split (splits: {sorted(splits)}); pass one with a train split.")
    for split, ds in splits.items():
        if image_column not in ds.column_names or label_column not in ds.column_names:
            raise UserInputError(f"hf:{name} split {split} has columns {ds.column_names}, not {image_column!r} and "
                                 f"{label_column!r}; set image_column / label_column.")
    feature = splits["train"].features[label_column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else \
        [str(v) for v in sorted(set(splits["train"][label_column]))]
    out = {}
    for split in ("train", "validation", "test"):
        if split in splits:
            ds = splits[split]
            labels = ds[label_column] if isinstance(feature, datasets.ClassLabel) else \
                [names.index(str(v)) for v in ds[label_column]]
            out[split] = (ds[image_column], np.asarray(labels, dtype=np.int64))
    return out, names


def _pil_pixels(images: Sequence[Any], channels: int, size: int) -> np.ndarray:
    from PIL import Image

    rows = []
    for item in images:
        image = Image.open(item) if isinstance(item, (str, Path)) else \
            item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item))
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        rows.append(np.asarray(image, dtype=np.uint8).reshape(size, size, channels))
    return np.stack(rows).transpose(0, 3, 1, 2)


def normalize_images(images: Any, channels: int, size: int, mean: Sequence[float], std: Sequence[float],
                     chunk: int = 4096) -> torch.Tensor:
    """Float ``(N, C, size, size)`` tensor ``(x / 255 - mean) / std`` per channel from uint8 images or PIL inputs.

    ``images`` is a uint8 array ``(N, H, W)`` (grayscale; repeated to 3 channels if ``channels == 3``, resized
    bilinearly with antialiasing when ``H, W != size``) or a sequence of PIL images / paths (converted to mode
    ``L`` or ``RGB`` and resized by PIL).
    """
    pixels = images[:, None] if isinstance(images, np.ndarray) else _pil_pixels(images, channels, size)
    if pixels.shape[1] != channels:
        pixels = np.repeat(pixels, channels, axis=1)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = torch.empty((len(pixels), channels, size, size), dtype=torch.float32)
    for start in range(0, len(pixels), chunk):
        x = torch.from_numpy(np.ascontiguousarray(pixels[start:start + chunk])).float() / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = (x - m) / s
    return out


class ImageDataset(Dataset):
    """Preprocessed images with their labels; items are ``{"pixel_values", "labels", "idx"}``.

    Args:
        pixels: Float ``(N, C, H, W)``.
        labels: Int64 ``(N,)``.
        transform: Applied to each ``(C, H, W)`` image on the fly (training augmentation); None for none.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, transform: Any = None) -> None:
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = self.pixels[index]
        return {"pixel_values": self.transform(x) if self.transform is not None else x,
                "labels": self.labels[index], "idx": torch.tensor(index)}


def _channel_stats(value: float | Sequence[float] | None, default: float, channels: int, name: str) -> list[float]:
    values = [default] * channels if value is None else [float(value)] * channels \
        if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels or (name == "std" and min(values) <= 0):
        raise UserInputError(f"{name}={value} must be one number or {channels} per channel (std > 0); fix {name}.")
    return values


class ImageClassificationDataModule(SplitLoaders, L.LightningDataModule):
    """Image classification: Fashion-MNIST (default, offline), a class-per-folder tree, or a Hugging Face dataset.

    Images are converted to ``channels`` (mode ``L`` or ``RGB``), resized to ``image_size`` (bilinear) and
    normalized once, ``(x / 255 - mean) / std``. A source without a validation split has ``val_size`` images
    held out of train by a permutation seeded with ``seed``; one without a test split (a folder without split
    folders, a single-split HF dataset) has a test split of the same size held out the same way. A given test
    split is kept as is. Label names are known before :meth:`setup` (:attr:`label_names`), so ``lit-compress
    fit`` links them into ``model.init_args.labels``.

    Args:
        dataset: ``"fashion-mnist"`` (the Debian package ``dataset-fashion-mnist``), ``"folder:<dir>"``
            (``<dir>/<class>/*.png|jpg``, or ``<dir>/{train,val|validation,test}/<class>/*``) or ``"hf:<name or
            save_to_disk dir>"`` (a ``datasets`` dataset with an image and a label column).
        root: Fashion-MNIST directory, searched after the Debian path (then ``$LIT_COMPRESS_FASHION_MNIST``).
        image_column: Image column of an ``hf:`` dataset.
        label_column: Label column of an ``hf:`` dataset (ClassLabel names are carried; other values are sorted).
        image_size: Side of the square images the model sees.
        channels: 1 (grayscale) or 3 (RGB; grayscale images are repeated).
        mean: Per-channel mean (one number or ``channels``); None: 0.2860 for Fashion-MNIST, 0.5 otherwise.
        std: Per-channel standard deviation; None: 0.3530 for Fashion-MNIST, 0.5 otherwise.
        val_size: Images held out of train for validation (an int, or a fraction of train if < 1).
        train_limit: Keep only the first N images of the shuffled training part (quick runs).
        eval_limit: Keep only the first N images of validation and of test.
        augment: Training-only augmentation (``RandomCrop(image_size, padding=2)`` with black padding, then
            ``RandomHorizontalFlip``), drawn from the global torch generator per example.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of the held-out permutation.
    """

    def __init__(self, dataset: str = "fashion-mnist", root: str | None = None, image_column: str = "image",
                 label_column: str = "label", image_size: int = 28, channels: int = 1,
                 mean: float | list[float] | None = None, std: float | list[float] | None = None,
                 val_size: int | float = 5000, train_limit: int | None = None, eval_limit: int | None = None,
                 augment: bool = False, batch_size: int = 128, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 42) -> None:
        super().__init__()
        if dataset != "fashion-mnist" and not dataset.startswith(("folder:", "hf:")):
            raise UserInputError(f"dataset={dataset!r} is not a known image source; use fashion-mnist, "
                                 "folder:<dir> or hf:<name or dir>.")
        if channels not in (1, 3) or image_size < 4 or batch_size < 1 or val_size < 0:
            raise UserInputError(f"need channels 1 or 3, image_size >= 4, batch_size >= 1 and val_size >= 0; got "
                                 f"{channels}, {image_size}, {batch_size}, {val_size}.")
        self.save_hyperparameters()
        fashion = dataset == "fashion-mnist"
        self.mean = _channel_stats(mean, FASHION_MNIST_MEAN if fashion else 0.5, channels, "mean")
        self.std = _channel_stats(std, FASHION_MNIST_STD if fashion else 0.5, channels, "std")
        self.dataset_name, self.root = dataset, root
        self.image_size, self.channels = image_size, channels
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self._raw: Raw | None = None
        self._splits: dict[str, ImageDataset] | None = None

    def raw(self) -> Raw:
        """``({split: (images, int64 labels)}, label_names)`` as read from the source (loaded once)."""
        if self._raw is None:
            name = self.dataset_name
            if name == "fashion-mnist":
                self._raw = load_fashion_mnist(self.root), list(FASHION_MNIST_LABELS)
            elif name.startswith("folder:"):
                self._raw = _load_folder(Path(name.removeprefix("folder:")).expanduser())
            else:
                self._raw = _load_hf(name.removeprefix("hf:"), self.hparams.image_column, self.hparams.label_column)
        return self._raw

    @property
    def label_names(self) -> list[str]:
        """Ordered class names (Fashion-MNIST's without reading its files)."""
        return list(FASHION_MNIST_LABELS) if self.dataset_name == "fashion-mnist" else list(self.raw()[1])

    def split_indices(self) -> dict[str, tuple[str, torch.Tensor]]:
        """``{split: (source split, row indices)}`` for train / validation / test after holding out and limits."""
        splits = self.raw()[0]
        n = len(splits["train"][1])
        size = self.hparams.val_size
        k = int(round(size * n)) if isinstance(size, float) and size < 1 else int(size)
        held = k * (("validation" not in splits) + ("test" not in splits))
        if held >= n:
            raise UserInputError(f"val_size={size} holds out {held} of the {n} training images, leaving none; pass "
                                 "a smaller val_size (an int, or a fraction like 0.1).")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))
        out, start = {}, 0
        for split in ("validation", "test"):
            if split in splits:
                out[split] = (split, torch.arange(len(splits[split][1])))
            else:
                out[split], start = ("train", perm[start:start + k]), start + k
        out["train"] = ("train", perm[held:][:self.hparams.train_limit])
        for split in ("validation", "test"):
            out[split] = (out[split][0], out[split][1][:self.hparams.eval_limit])
        return out

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        raw, splits = self.raw()[0], {}
        for split, (source, rows) in self.split_indices().items():
            images, labels = raw[source]
            picked = images[rows.numpy()] if isinstance(images, np.ndarray) else [images[i] for i in rows.tolist()]
            pixels = normalize_images(picked, self.channels, self.image_size, self.mean, self.std)
            transform = self._augmentation() if split == "train" and self.hparams.augment else None
            splits[split] = ImageDataset(pixels, torch.as_tensor(labels[rows.numpy()]), transform)
        self._splits = splits

    def _augmentation(self) -> Any:
        from lit_compress.vision.compat import torchvision  # noqa: F401  (makes the import below work)
        from torchvision.transforms import v2

        black = [-m / s for m, s in zip(self.mean, self.std)]  # where x = 0 lands after normalization
        return v2.Compose([v2.RandomCrop(self.image_size, padding=2, fill=black[0] if self.channels == 1 else black),
                           v2.RandomHorizontalFlip()])

    def dataset(self, split: str) -> ImageDataset:
        """The preprocessed dataset of ``"train"``, ``"validation"`` or ``"test"`` (calls :meth:`setup`)."""
        self.setup()
        assert self._splits is not None
        if split not in self._splits:
            raise KeyError(f"No split {split!r}; available: {sorted(self._splits)}.")
        return self._splits[split]

    def examples(self, split: str) -> list[torch.Tensor]:
        """The ``(C, H, W)`` images of a split as the export and benchmark take them (no augmentation)."""
        return list(self.dataset(split).pixels.unbind(0))

    def labels(self, split: str) -> list[int]:
        """Integer labels of a split."""
        return self.dataset(split).labels.tolist()

    def num_examples(self, split: str) -> int:
        """Number of images in a split."""
        return len(self.dataset(split))

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        loader = ResumableLoader if shuffle else DataLoader  # training order survives a mid-epoch restart
        return loader(self.dataset(split), batch_size=batch_size, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0)

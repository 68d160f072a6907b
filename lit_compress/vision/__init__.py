"""Vision: image data and image models through the same stages as text, plus the seed 001/003 LeNet recipes.

- :class:`ImageClassificationDataModule`: Fashion-MNIST (offline, Debian's ``dataset-fashion-mnist``), image
  folders (one sub-folder per class) or a Hugging Face dataset with an image column; batches of
  ``pixel_values`` / ``labels`` / ``idx``.
- :class:`CNNClassifier` (ResNet-18-style, MobileNetV2, or a user class, through torchvision) and
  :class:`ViTClassifier` (transformers' ViT): Hugging Face-style image classifiers that the distillation,
  pruning, QAT, export and benchmark stages take like the text encoders.
- The seeds' MNIST CNNs: :class:`LeNetModule`, :class:`MNISTDataModule` (unstructured pruning recipes).
"""

from lit_compress.vision.classifier import CNNClassifier, ImageClassifier, ImageClassifierConfig, ViTClassifier
from lit_compress.vision.data import MNISTDataModule, load_mnist_tensors
from lit_compress.vision.images import FASHION_MNIST_LABELS, ImageClassificationDataModule, load_fashion_mnist, read_idx
from lit_compress.vision.models import LeNet, TutorialCNN, build_cnn, conv_and_linear
from lit_compress.vision.module import LeNetModule

"""Vision recipe (seeds 001 and 003): LeNet-style CNNs on the offline MNIST sample, for pruning experiments."""

from lit_compress.vision.data import MNISTDataModule, load_mnist_tensors
from lit_compress.vision.models import LeNet, TutorialCNN, build_cnn, conv_and_linear
from lit_compress.vision.module import LeNetModule

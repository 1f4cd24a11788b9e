"""Image sources: every data set behind one `ImageSource` interface read by index arrays."""

from ssl_lightning.data.sources.base import ImageSource
from ssl_lightning.data.sources.cifar10 import CIFAR10Source
from ssl_lightning.data.sources.digits import DigitsSource
from ssl_lightning.data.sources.hdf5 import HDF5Source
from ssl_lightning.data.sources.image_folder import ImageFolderSource
from ssl_lightning.data.sources.synthetic import SyntheticSource

__all__ = [
    "CIFAR10Source",
    "DigitsSource",
    "HDF5Source",
    "ImageFolderSource",
    "ImageSource",
    "SyntheticSource",
]

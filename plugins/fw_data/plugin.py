"""Entry point of the ``data`` plugin: datasets in their official layouts."""

from __future__ import annotations

from fw import hookimpl
from fw_data.arrays import arrays
from fw_data.cifar10 import cifar10
from fw_data.digits import digits
from fw_data.fashion_mnist import fashion_mnist
from fw_data.image_folder import image_folder
from fw_data.mnist5k import mnist5k


@hookimpl
def fw_datasets():
    return {
        "digits": digits,
        "fashion_mnist": fashion_mnist,
        "mnist5k": mnist5k,
        "cifar10": cifar10,
        "image_folder": image_folder,
        "arrays": arrays,
    }

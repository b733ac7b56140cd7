"""Entry point of the ``icon`` plugin: the catalog distributions and wrappers."""

from __future__ import annotations

from fw import hookimpl
from fw_icon.discrete import CrossModal, DataLabel, Identity, SameClass
from fw_icon.kernels import CohesionVariance, CrossModalGaussian, PrototypeSoftmax, Triplet
from fw_icon.neighbors import GraphKernel, UniformKNN
from fw_icon.prototypes import Harmonic, PrototypeTriplet
from fw_icon.wrappers import Debiased, Propagated, Union
from fw_icon.xsample import CorrespondingGaussian


@hookimpl
def fw_distributions():
    return {
        "identity": Identity,
        "knn": UniformKNN,
        "graph": GraphKernel,
        "cross_modal": CrossModal,
        "cross_modal_gaussian": CrossModalGaussian,
        "same_class": SameClass,
        "data_label": DataLabel,
        "prototype_softmax": PrototypeSoftmax,
        "harmonic": Harmonic,
        "prototype_triplet": PrototypeTriplet,
        "corresponding_gaussian": CorrespondingGaussian,
        "cohesion_variance": CohesionVariance,
        "triplet": Triplet,
        "debiased": Debiased,
        "propagated": Propagated,
        "union": Union,
    }


@hookimpl
def fw_table_cells():
    from fw_icon.cells import CELLS

    return CELLS

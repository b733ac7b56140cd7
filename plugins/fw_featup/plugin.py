"""Entry point of the ``featup`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_featup import data, downsamplers, featurizers, implicit, learner, upsamplers


@hookimpl
def fw_upsamplers():
    return {
        "bilinear": upsamplers.bilinear,
        "bicubic": upsamplers.bicubic,
        "resize_conv": upsamplers.ResizeConv,
        "jbu": upsamplers.JBU,
        "jbu_stack": upsamplers.JBUStack,
        "implicit": implicit.ImplicitUpsampler,
    }


@hookimpl
def fw_downsamplers():
    return {
        "simple": downsamplers.SimpleDownsampler,
        "attention": downsamplers.AttentionDownsampler,
    }


@hookimpl
def fw_featurizers():
    return {"upsampled": featurizers.upsampled}


@hookimpl
def fw_learners():
    return {"featup": learner.FeatUpLearner}


@hookimpl
def fw_datasets():
    return {"skimage_photos": data.skimage_photos}

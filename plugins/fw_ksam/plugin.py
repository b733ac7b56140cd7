"""Entry point of the ``ksam`` plugin: explainers of similarity models (thesis Ch. 7)."""

from __future__ import annotations

from fw import hookimpl
from fw_ksam import command, exact, ig, kernel, lime, sam, sbsm


@hookimpl
def fw_explainers():
    return {
        "exact": exact.Exact,
        "ksam": kernel.KSAM,
        "kernel_shap": kernel.KernelSHAP,
        "sam": sam.SAM,
        "igsam": ig.IGSAM,
        "gradcam": sam.GradCAM,
        "lime": lime.LIME,
        "sbsm": sbsm.SBSM,
    }


@hookimpl
def fw_commands():
    return {"explain": command.COMMAND}

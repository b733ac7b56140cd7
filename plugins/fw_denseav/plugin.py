"""Entry point of the ``denseav`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_denseav import aggregators, audio, datasets, learner, localize, spoken_objects


@hookimpl
def fw_aggregators():
    return {
        "max_mean": aggregators.MaxMean,
        "mean_mean": aggregators.MeanMean,
        "max_max": aggregators.MaxMax,
    }


@hookimpl
def fw_featurizers():
    return {
        "log_mel_encoder": audio.log_mel_encoder,
        "hubert": audio.hubert,
    }


@hookimpl
def fw_datasets():
    return {
        "spoken_objects": spoken_objects.spoken_objects,
        "places_audio": datasets.places_audio,
        "audioset_clips": datasets.audioset_clips,
    }


@hookimpl
def fw_learners():
    return {"denseav": learner.DenseAV}


@hookimpl
def fw_commands():
    return {"localize": localize.COMMAND}

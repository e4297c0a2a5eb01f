"""Moved: the small recognisers trained on synthetic identities live in :mod:`facelab.models.synthetic` (networks,
checkpoint, verified loader) and :mod:`facelab.synth.recognisers` (their training on the synthetic world); this
module re-exports both so old imports keep working."""

from facelab.models.synthetic import (FACENETS_CHECKPOINT, FACENETS_COMMAND, SYNTH_FACENETS, SYNTH_SETTINGS,
                                      SynthFaceNet, load_synth_facenet, train_synth_facenet)
from facelab.synth.recognisers import synth_facenet, train_synth_facenets

__all__ = ["SynthFaceNet", "SYNTH_FACENETS", "SYNTH_SETTINGS", "FACENETS_CHECKPOINT", "FACENETS_COMMAND",
           "train_synth_facenet", "train_synth_facenets", "load_synth_facenet", "synth_facenet"]

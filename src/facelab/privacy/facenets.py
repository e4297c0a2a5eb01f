"""Moved to :mod:`facelab.models.synthetic` (the small recognisers trained on synthetic identities live with the
other face models); this module re-exports it so old imports keep working."""

from facelab.models.synthetic import (FACENETS_CHECKPOINT, FACENETS_COMMAND, SYNTH_FACENETS, SYNTH_SETTINGS,
                                      SynthFaceNet, load_synth_facenet, train_synth_facenet, train_synth_facenets)

__all__ = ["SynthFaceNet", "SYNTH_FACENETS", "SYNTH_SETTINGS", "FACENETS_CHECKPOINT", "FACENETS_COMMAND",
           "train_synth_facenet", "train_synth_facenets", "load_synth_facenet"]

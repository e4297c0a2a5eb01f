"""Affect: an audio-visual affect corpus with full ground truth, loaders for the real corpora (Aff-Wild2, BAH,
Hume-Vidmimic2) and face / voice / words descriptors (issue 15; chapter 07, EmotiEffLib at ABAW-8).

* :mod:`facelab.affect.corpus`: :class:`AffectCorpus` streams :class:`AffectClip` s (synthetic identities speaking
  scripted utterances through espeak-ng, per-frame ABAW expression, valence/arousal and AUs, transcripts,
  ambivalence/hesitancy planted as cross-modal conflict) and emotional-mimicry pairs.
* :mod:`facelab.affect.script`, :mod:`facelab.affect.speech`, :mod:`facelab.affect.audio`: the script grammar,
  espeak-ng with prosody, audio checks.
* :mod:`facelab.affect.loaders`: users' local copies of Aff-Wild2 (ABAW annotation files), BAH and Hume-Vidmimic2.
* :mod:`facelab.affect.pipeline`: the EmotiEffLib ABAW-8 pipeline (pooling, MLP head, frame selection, smoothing,
  fusion, ablation).
* :mod:`facelab.affect.descriptors`: face (face-api and FER nets on detected, aligned frames), voice (openSMILE
  eGeMAPS), words (PocketSphinx with a grammar language model, MiniLM embeddings), word error rate; cached by
  content hash.
"""

from facelab.affect.audio import AudioCheck, AudioError, check_audio
from facelab.affect.corpus import (ABAW_TO_WORLD, AH_CUES, CIRCUMPLEX, MIMICRY_AUS, AffectClip, AffectCorpus,
                                   MimicryClip, mimicry_aus)
from facelab.affect.script import Script, check_expression, draw_script, grammar_sentences
from facelab.affect.speech import EspeakMissing, Prosody, synthesize

__all__ = ["AffectCorpus", "AffectClip", "MimicryClip", "ABAW_TO_WORLD", "AH_CUES", "CIRCUMPLEX", "MIMICRY_AUS",
           "mimicry_aus", "Script", "check_expression", "draw_script", "grammar_sentences", "EspeakMissing",
           "Prosody", "synthesize", "AudioCheck", "AudioError", "check_audio"]

"""Test-time adaptation of an expression model on a video stream (chapter 09): TENT, EATA, SAR, TempT and FIESTA
(Fisher-selected parameters, temporal consistency), each an adapter with one ``adapt(frames)`` step.

- :mod:`.norm`: :class:`StreamBatchNorm2d` (source / batch / running statistics; batches of one frame capped);
- :mod:`.fisher`: diagonal Fisher of the pseudo-label log-likelihood, top-k masks, Jaccard overlap, per-layer counts;
- :mod:`.methods`: the adapters and :func:`run_stream`.
"""

from facelab.adaptation.test_time.fisher import (count_parameters, fisher_diagonal, mask_by_layer, mask_jaccard,
                                                 mask_size, topk_mask)
from facelab.adaptation.test_time.methods import (EATA, SAR, BNStats, Fiesta, NoAdaptation, StreamResult, TempT, Tent,
                                                  TestTimeAdapter, entropy, run_stream, source_fishers,
                                                  temporal_consistency)
from facelab.adaptation.test_time.norm import StreamBatchNorm2d, convert_batchnorm, set_bn_stream, stream_norms

METHODS = {"none": NoAdaptation, "BN stats": BNStats, "TENT": Tent, "EATA": EATA, "SAR": SAR,
           "TempT (all parameters)": TempT, "FIESTA": Fiesta}

__all__ = ["METHODS", "TestTimeAdapter", "NoAdaptation", "BNStats", "Tent", "EATA", "SAR", "TempT", "Fiesta",
           "StreamResult", "run_stream", "entropy", "temporal_consistency", "source_fishers", "fisher_diagonal",
           "topk_mask", "mask_size", "mask_jaccard", "mask_by_layer", "count_parameters", "StreamBatchNorm2d",
           "convert_batchnorm", "set_bn_stream", "stream_norms"]

"""Unified physical-digital face attack detection: a small CLIP, Soft MoE, and FG-MoE-CLIP-CAR's class regularisers.

Chapter: ``notebooks/04_face_antispoofing.ipynb``; its protocol (UniAttackData-like set and splits), ablation,
tables and figures are in :mod:`facelab.studies.face_antispoofing`. Modules:

- :mod:`~facelab.antispoof.vit`: CLIP-style ViT image tower with OpenCLIP parameter names.
- :mod:`~facelab.antispoof.moe`: Soft MoE (Puigcerver et al. 2023) with fine-grained group routing, and its
  function-preserving upcycling in parallel with the dense MLP.
- :mod:`~facelab.antispoof.text`: frozen MiniLM text tower or a small bag-of-words one.
- :mod:`~facelab.antispoof.clip`: the dual encoder and its contrastive pretraining on synthetic captions.
- :mod:`~facelab.antispoof.pretrain`: the chapter's CLIP pretrained once on thousands of faces and cached
  (``python -m facelab.antispoof.pretrain``).
- :mod:`~facelab.antispoof.losses`: Disentanglement (DM) and Cluster Distillation (CDM) losses.
- :mod:`~facelab.antispoof.detector`: the CLIP attack detector, a CNN baseline, a linear probe, the training loop.
- :mod:`~facelab.antispoof.data`: the attack set container (images + labels) the detectors are scored on.
- :mod:`~facelab.antispoof.diagnostics`: the upcycling gap of a Soft MoE tower and inference throughput.
- :mod:`~facelab.antispoof.openclip`: loading OpenCLIP ViT-B/16 image weights from a local file (full profile).
"""

from facelab.antispoof.vit import ViTConfig, VisionTransformer, check_images
from facelab.antispoof.moe import ParallelMoE, SoftMoE, check_finite_routing
from facelab.antispoof.text import BagOfWordsTextTower, MiniLMTextTower, minilm_path
from facelab.antispoof.clip import build_clip, CLIPModel, CORRUPTIONS, clip_loss, corrupt, pretrain_clip
from facelab.antispoof.pretrain import CLIP_CHECKPOINT, load_pretrained_clip, pretrained_clip, save_clip
from facelab.antispoof.losses import (centre_distance, class_centres, cluster_distillation_loss,
                                      disentanglement_loss)
from facelab.antispoof.detector import (CLASS_PROMPTS, AttackDetector, CNNBaseline, LinearProbe, TrainConfig,
                                        predict_live, train_detector)
from facelab.antispoof.data import AttackSet, attack_kinds, resize_images
from facelab.antispoof.diagnostics import throughput, upcycling_gap
from facelab.antispoof.openclip import convert_openclip_state_dict, load_openclip_visual

__all__ = [
    "ViTConfig", "VisionTransformer", "check_images", "SoftMoE", "ParallelMoE",
    "check_finite_routing", "BagOfWordsTextTower", "MiniLMTextTower",
    "minilm_path", "build_clip", "CLIPModel", "CORRUPTIONS", "clip_loss", "corrupt", "pretrain_clip", "CLIP_CHECKPOINT",
    "load_pretrained_clip", "pretrained_clip", "save_clip", "centre_distance",
    "class_centres", "cluster_distillation_loss", "disentanglement_loss", "CLASS_PROMPTS", "AttackDetector",
    "CNNBaseline", "LinearProbe", "TrainConfig", "predict_live", "train_detector", "AttackSet", "attack_kinds",
    "resize_images", "throughput", "upcycling_gap", "convert_openclip_state_dict", "load_openclip_visual",
]

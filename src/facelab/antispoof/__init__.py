"""Unified physical-digital face attack detection: a small CLIP, Soft MoE, and FG-MoE-CLIP-CAR's class regularisers.

Chapter: ``notebooks/04_face_antispoofing.ipynb``. Modules:

- :mod:`~facelab.antispoof.vit`: CLIP-style ViT image tower with OpenCLIP parameter names.
- :mod:`~facelab.antispoof.moe`: Soft MoE (Puigcerver et al. 2023) with fine-grained group routing.
- :mod:`~facelab.antispoof.text`: frozen MiniLM text tower or a small bag-of-words one.
- :mod:`~facelab.antispoof.clip`: the dual encoder and its contrastive pretraining on synthetic captions.
- :mod:`~facelab.antispoof.pretrain`: the chapter's CLIP pretrained once on thousands of faces and cached
  (``python -m facelab.antispoof.pretrain``).
- :mod:`~facelab.antispoof.losses`: Disentanglement (DM) and Cluster Distillation (CDM) losses.
- :mod:`~facelab.antispoof.detector`: the CLIP attack detector, a CNN baseline, a linear probe, the training loop.
- :mod:`~facelab.antispoof.data`: the unified attack set and the UniAttackData-style protocols.
- :mod:`~facelab.antispoof.experiments`: the ablation of the chapter.
- :mod:`~facelab.antispoof.openclip`: loading OpenCLIP ViT-B/16 image weights from a local file (full profile).
"""

from facelab.antispoof.vit import ViTConfig, VisionTransformer, check_images
from facelab.antispoof.moe import SoftMoE
from facelab.antispoof.text import BagOfWordsTextTower, MiniLMTextTower, minilm_path
from facelab.antispoof.clip import build_clip, CLIPModel, CORRUPTIONS, clip_loss, corrupt, pretrain_clip
from facelab.antispoof.pretrain import CLIP_CHECKPOINT, load_pretrained_clip, save_clip
from facelab.antispoof.losses import (centre_distance, class_centres, cluster_distillation_loss,
                                      disentanglement_loss)
from facelab.antispoof.detector import (CLASS_PROMPTS, AttackDetector, CNNBaseline, LinearProbe, TrainConfig,
                                        predict_live, train_detector)
from facelab.antispoof.data import (AttackSet, attack_kinds, attacks_on_photos, build_attack_set,
                                    pretraining_faces, protocols, split_protocol)
from facelab.antispoof.experiments import (DEFAULT_MOE, FULL_MODEL, VARIANTS, AblationResult, evaluate,
                                           failure_cases, feature_table, fit_variant, run_ablation,
                                           throughput, upcycling_gap)
from facelab.antispoof.openclip import convert_openclip_state_dict, load_openclip_visual
from facelab.antispoof import plots

__all__ = [
    "ViTConfig", "VisionTransformer", "check_images", "SoftMoE", "BagOfWordsTextTower", "MiniLMTextTower",
    "minilm_path", "build_clip", "CLIPModel", "CORRUPTIONS", "clip_loss", "corrupt", "pretrain_clip", "CLIP_CHECKPOINT",
    "load_pretrained_clip", "save_clip", "centre_distance",
    "class_centres", "cluster_distillation_loss", "disentanglement_loss", "CLASS_PROMPTS", "AttackDetector",
    "CNNBaseline", "LinearProbe", "TrainConfig", "predict_live", "train_detector", "AttackSet", "attack_kinds",
    "attacks_on_photos", "build_attack_set", "pretraining_faces", "protocols", "split_protocol", "DEFAULT_MOE",
    "FULL_MODEL", "VARIANTS", "AblationResult", "evaluate", "failure_cases", "feature_table", "fit_variant",
    "throughput", "upcycling_gap",
    "run_ablation", "convert_openclip_state_dict", "load_openclip_visual", "plots",
]

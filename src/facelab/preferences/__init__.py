"""A canonical basis of preferences (chapter 12, ``12_preference_basis``): a face-edit preference world with planted
categories (:mod:`.world`), the paper's pipeline from reasons to categories (:mod:`.pipeline`), Bradley-Terry / Elo
with ``choix`` (:mod:`.elo`), DPO on a small edit policy (:mod:`.dpo`) and the Chatbot Arena aggregate of PyPI
``leaderbot`` (:mod:`.arena`)."""

from facelab.preferences.world import (CATEGORIES, CONTEXTS, Category, Comparisons, PreferenceWorld,
                                       check_comparisons, face_attributes, make_world, reason_text, sample_raters,
                                       simulate_choices, world_categories)
from facelab.preferences.pipeline import (bootstrap_curves, check_K, cluster_reasons, cluster_recovery,
                                          coverage_curve, embed_reasons, explained_variance_curve,
                                          rater_category_matrix, select_categories)
from facelab.preferences.elo import (ELO_SCALE, bradley_terry, elo_with_intervals, per_category_elo, to_elo,
                                     win_matrix)
from facelab.preferences.dpo import GaussianEditPolicy, dpo_update, judge_policies, preference_pairs
from facelab.preferences.arena import ArenaData, arena_low_rank, arena_path, arena_scores, load_arena

__all__ = ["CATEGORIES", "CONTEXTS", "Category", "Comparisons", "PreferenceWorld", "check_comparisons",
           "face_attributes", "make_world", "reason_text", "sample_raters", "simulate_choices", "world_categories",
           "bootstrap_curves", "check_K", "cluster_reasons", "cluster_recovery", "coverage_curve", "embed_reasons",
           "explained_variance_curve", "rater_category_matrix", "select_categories", "ELO_SCALE", "bradley_terry",
           "elo_with_intervals", "per_category_elo", "to_elo", "win_matrix", "GaussianEditPolicy", "dpo_update",
           "judge_policies", "preference_pairs", "ArenaData", "arena_low_rank", "arena_path", "arena_scores",
           "load_arena"]

"""Preference objectives: pure functions of arrays, and a registry of them by name.

>>> from jaxpref import losses
>>> losses.get("dpo") is losses.dpo
True
"""

from jaxpref.losses._registry import FAMILIES as FAMILIES
from jaxpref.losses._registry import ObjectiveSpec as ObjectiveSpec
from jaxpref.losses._registry import available as available
from jaxpref.losses._registry import get as get
from jaxpref.losses._registry import register as register
from jaxpref.losses._registry import spec as spec
from jaxpref.losses.fused import fused_reference_logps as fused_reference_logps
from jaxpref.losses.fused import infifpo as infifpo
from jaxpref.losses.game import egpo as egpo
from jaxpref.losses.game import geometric_mixture as geometric_mixture
from jaxpref.losses.game import nash_md as nash_md
from jaxpref.losses.game import nash_md_pg as nash_md_pg
from jaxpref.losses.game import online_ipo as online_ipo
from jaxpref.losses.game import online_ipo_omd as online_ipo_omd
from jaxpref.losses.game import preference_regression as preference_regression
from jaxpref.losses.game_updates import Extragradient as Extragradient
from jaxpref.losses.game_updates import extragradient as extragradient
from jaxpref.losses.general_preference import general_preference_score as general_preference_score
from jaxpref.losses.general_preference import gpm as gpm
from jaxpref.losses.group import NORMALIZATIONS as NORMALIZATIONS
from jaxpref.losses.group import clipped_surrogate as clipped_surrogate
from jaxpref.losses.group import grpo_advantages as grpo_advantages
from jaxpref.losses.group import pref_grpo_advantages as pref_grpo_advantages
from jaxpref.losses.group import preference_win_rates as preference_win_rates
from jaxpref.losses.group import rloo_advantages as rloo_advantages
from jaxpref.losses.group import surrogate_metrics as surrogate_metrics
from jaxpref.losses.hierarchical import hierarchical_pairwise as hierarchical_pairwise
from jaxpref.losses.listwise import listnet as listnet
from jaxpref.losses.listwise import logratio_scores as logratio_scores
from jaxpref.losses.listwise import plackett_luce as plackett_luce
from jaxpref.losses.listwise import pro as pro
from jaxpref.losses.pairs import PAIR_STRATEGIES as PAIR_STRATEGIES
from jaxpref.losses.pairs import ListPairs as ListPairs
from jaxpref.losses.pairs import curriculum_order as curriculum_order
from jaxpref.losses.pairs import list_pairs as list_pairs
from jaxpref.losses.pairs import num_pairs as num_pairs
from jaxpref.losses.pairs import pair_gaps as pair_gaps
from jaxpref.losses.pairs import take_pairs as take_pairs
from jaxpref.losses.pairwise import dpo as dpo
from jaxpref.losses.pairwise import hinge as hinge
from jaxpref.losses.pairwise import ipo as ipo
from jaxpref.losses.pairwise import logratio_loss as logratio_loss
from jaxpref.losses.pairwise import logratio_margin as logratio_margin
from jaxpref.losses.pairwise import robust_dpo as robust_dpo
from jaxpref.losses.pairwise import sigmoid_cross_entropy as sigmoid_cross_entropy
from jaxpref.losses.pairwise import soft_preference as soft_preference
from jaxpref.losses.ranking import lambda_weights as lambda_weights
from jaxpref.losses.ranking import lipo_lambda as lipo_lambda
from jaxpref.losses.ranking import ranklist as ranklist
from jaxpref.losses.reference_free import log_odds as log_odds
from jaxpref.losses.reference_free import orpo as orpo
from jaxpref.losses.reference_free import simpo as simpo
from jaxpref.losses.reward_modeling import bradley_terry as bradley_terry
from jaxpref.losses.reward_modeling import flip_low_strength as flip_low_strength
from jaxpref.losses.reward_modeling import strength_recipe_loss as strength_recipe_loss
from jaxpref.losses.self_play import empirical_win_rates as empirical_win_rates
from jaxpref.losses.self_play import gpo as gpo
from jaxpref.losses.self_play import sppo as sppo
from jaxpref.losses.token_level import activation_token_mask as activation_token_mask
from jaxpref.losses.token_level import init_learned_token_mask as init_learned_token_mask
from jaxpref.losses.token_level import learned_token_mask as learned_token_mask
from jaxpref.losses.token_level import sparse_po as sparse_po
from jaxpref.losses.token_level import token_kl_divergence as token_kl_divergence
from jaxpref.losses.unpaired import kto as kto
from jaxpref.losses.unpaired import kto_reference_point as kto_reference_point

__all__ = [
    "FAMILIES",
    "NORMALIZATIONS",
    "PAIR_STRATEGIES",
    "Extragradient",
    "ListPairs",
    "ObjectiveSpec",
    "activation_token_mask",
    "available",
    "bradley_terry",
    "clipped_surrogate",
    "curriculum_order",
    "dpo",
    "egpo",
    "empirical_win_rates",
    "extragradient",
    "flip_low_strength",
    "fused_reference_logps",
    "general_preference_score",
    "geometric_mixture",
    "get",
    "gpm",
    "gpo",
    "grpo_advantages",
    "hierarchical_pairwise",
    "hinge",
    "infifpo",
    "init_learned_token_mask",
    "ipo",
    "kto",
    "kto_reference_point",
    "lambda_weights",
    "learned_token_mask",
    "lipo_lambda",
    "list_pairs",
    "listnet",
    "log_odds",
    "logratio_loss",
    "logratio_margin",
    "logratio_scores",
    "nash_md",
    "nash_md_pg",
    "num_pairs",
    "online_ipo",
    "online_ipo_omd",
    "orpo",
    "pair_gaps",
    "plackett_luce",
    "pref_grpo_advantages",
    "preference_regression",
    "preference_win_rates",
    "pro",
    "ranklist",
    "register",
    "rloo_advantages",
    "robust_dpo",
    "sigmoid_cross_entropy",
    "simpo",
    "soft_preference",
    "sparse_po",
    "spec",
    "sppo",
    "strength_recipe_loss",
    "surrogate_metrics",
    "take_pairs",
    "token_kl_divergence",
]

register("dpo", dpo, family="pairwise")
register("robust_dpo", robust_dpo, family="pairwise")
register("ipo", ipo, family="pairwise")
register("hinge", hinge, family="pairwise")
register("soft_preference", soft_preference, family="pairwise")
register("simpo", simpo, family="pairwise", needs_reference=False, average_logps=True)
register("orpo", orpo, family="pairwise", needs_reference=False, average_logps=True)
register("bradley_terry", bradley_terry, family="reward", needs_reference=False)
register("kto", kto, family="unpaired")
register("strength_recipe", strength_recipe_loss, family="reward", needs_reference=False)
register("hierarchical_pairwise", hierarchical_pairwise, family="reward", needs_reference=False)
register("sparse_po", sparse_po, family="pairwise")
register("infifpo", infifpo, family="pairwise")
register("plackett_luce", plackett_luce, family="listwise")
register("listnet", listnet, family="listwise")
register("lipo_lambda", lipo_lambda, family="listwise")
register("ranklist", ranklist, family="listwise")
register("pro", pro, family="listwise", needs_reference=False, average_logps=True)
register("grpo", clipped_surrogate, family="group")
register("gpm", gpm, family="reward", needs_reference=False)
register("online_ipo", online_ipo, family="game")
register("online_ipo_omd", online_ipo_omd, family="game")
register("nash_md", nash_md, family="game")
register("nash_md_pg", nash_md_pg, family="game")
register("egpo", egpo, family="game")
register("sppo", sppo, family="game")
register("gpo", gpo, family="game")

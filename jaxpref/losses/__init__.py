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
from jaxpref.losses.hierarchical import hierarchical_pairwise as hierarchical_pairwise
from jaxpref.losses.pairwise import bradley_terry as bradley_terry
from jaxpref.losses.pairwise import dpo as dpo
from jaxpref.losses.pairwise import hinge as hinge
from jaxpref.losses.pairwise import ipo as ipo
from jaxpref.losses.pairwise import log_odds as log_odds
from jaxpref.losses.pairwise import logratio_loss as logratio_loss
from jaxpref.losses.pairwise import logratio_margin as logratio_margin
from jaxpref.losses.pairwise import orpo as orpo
from jaxpref.losses.pairwise import robust_dpo as robust_dpo
from jaxpref.losses.pairwise import sigmoid_cross_entropy as sigmoid_cross_entropy
from jaxpref.losses.pairwise import simpo as simpo
from jaxpref.losses.pairwise import soft_preference as soft_preference
from jaxpref.losses.reward_modeling import flip_low_strength as flip_low_strength
from jaxpref.losses.reward_modeling import strength_recipe_loss as strength_recipe_loss
from jaxpref.losses.token_level import activation_token_mask as activation_token_mask
from jaxpref.losses.token_level import init_learned_token_mask as init_learned_token_mask
from jaxpref.losses.token_level import learned_token_mask as learned_token_mask
from jaxpref.losses.token_level import sparse_po as sparse_po
from jaxpref.losses.token_level import token_kl_divergence as token_kl_divergence
from jaxpref.losses.unpaired import kto as kto
from jaxpref.losses.unpaired import kto_reference_point as kto_reference_point

__all__ = [
    "FAMILIES",
    "ObjectiveSpec",
    "activation_token_mask",
    "available",
    "bradley_terry",
    "dpo",
    "flip_low_strength",
    "fused_reference_logps",
    "get",
    "hierarchical_pairwise",
    "hinge",
    "infifpo",
    "init_learned_token_mask",
    "ipo",
    "kto",
    "kto_reference_point",
    "learned_token_mask",
    "log_odds",
    "logratio_loss",
    "logratio_margin",
    "orpo",
    "register",
    "robust_dpo",
    "sigmoid_cross_entropy",
    "simpo",
    "soft_preference",
    "sparse_po",
    "spec",
    "strength_recipe_loss",
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

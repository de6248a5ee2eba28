"""Verifier backends behind one batched interface (see :mod:`oracles.base`).

Built-in names (the ``--oracle`` values): ``crown`` (default), ``alpha-crown``, ``milp``,
``bab``, ``lirpa`` and ``marabou`` (optional packages), ``attack`` (falsifier only), and
``cascade`` (attack, crown, alpha-crown, then milp). ``"a+b+c"`` composes any of them.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from parallelepipedonn._lazy import lazy_attributes

from .capabilities import QUERIES, Capabilities
from .registry import (
    ENTRY_POINT_GROUP,
    accepts_option,
    make_oracle,
    oracle_entries,
    oracle_queries,
    register_oracle,
    require_queries,
)

if TYPE_CHECKING:
    from parallelepipedonn.network import Network

    from .attack import AttackOracle
    from .bab import BabOracle
    from .base import Answer, Extreme, Oracle, OracleStats, RegionAnswer, RegionVerdict, Verdict
    from .cascade import Cascade
    from .crown import AlphaCrownOracle, CrownOracle
    from .distance import Distance, min_adversarial_distance
    from .gmm import GmmOracle
    from .input_split import InputSplitOracle
    from .lirpa import LirpaOracle, lirpa_available
    from .marabou import MarabouOracle, marabou_available
    from .milp import MilpOracle

DEFAULT_CASCADE = ("attack", "crown", "alpha-crown", "milp")

# The backends (torch, pyomo/HiGHS, optional verifiers) are imported on first use: each
# public name below is loaded from its module when first looked up (PEP 562), and the
# built-in oracles are registered by dotted path.
_LAZY = {
    "AttackOracle": ".attack", "BabOracle": ".bab", "Answer": ".base",
    "Extreme": ".base", "Oracle": ".base", "OracleStats": ".base", "RegionAnswer": ".base",
    "RegionVerdict": ".base", "Verdict": ".base", "Cascade": ".cascade", "AlphaCrownOracle": ".crown",
    "CrownOracle": ".crown", "Distance": ".distance", "GmmOracle": ".gmm", "min_adversarial_distance": ".distance",
    "InputSplitOracle": ".input_split", "LirpaOracle": ".lirpa", "lirpa_available": ".lirpa", "MarabouOracle": ".marabou",
    "marabou_available": ".marabou", "MilpOracle": ".milp",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


class _Package(types.ModuleType):
    """The package module: importing the submodule ``cascade`` binds it on the package;
    the package's public name ``cascade`` stays the function defined here."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cascade" and isinstance(value, types.ModuleType) and "cascade" in self.__dict__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def cascade(network: Network, *, stages: tuple[str, ...] = DEFAULT_CASCADE, device: str = "cpu",
            time_limit: float | None = None) -> Cascade:
    """attack → crown → alpha-crown → milp: each asked only where the previous said UNKNOWN."""
    options: dict[str, Any] = {"device": device}
    if time_limit is not None:
        options["time_limit"] = time_limit
    return make_oracle("+".join(stages), network, **options)  # type: ignore[return-value]


cascade.reads_graphs = True  # type: ignore[attr-defined]  # as its stages do (make_oracle decides)


_REGION = ("verify", "class_region", "coordinate_extreme", "class_extremes", "distance")  # milp's queries
register_oracle("crown", "oracles.crown:CrownOracle", "CROWN bound propagation (sound, incomplete, batched)",
                queries=("verify", "class_extremes"))
register_oracle("alpha-crown", "oracles.crown:AlphaCrownOracle",
                "alpha-CROWN: CROWN with optimised ReLU slopes (sound, incomplete)", queries=("verify", "class_extremes"))
register_oracle("milp", "oracles.milp:MilpOracle", "exact MILP encoding with pyomo, solved by HiGHS (sound, complete)",
                queries=_REGION)
register_oracle("bab", "oracles.bab:BabOracle",
                "branch and bound with alpha/beta-CROWN bounds and LP leaves (sound, complete)", queries=("verify",))
register_oracle("input-split", "oracles.input_split:InputSplitOracle",
                "branch and bound on the input box with batched CROWN bounds, for few inputs (sound)",
                queries=("verify",))
register_oracle("lirpa", "oracles.lirpa:LirpaOracle",
                "auto_LiRPA IBP/CROWN/alpha-CROWN (optional, from source; sound, incomplete)", queries=("verify",))
register_oracle("marabou", "oracles.marabou:MarabouOracle",
                "Marabou via maraboupy 2.0 (optional; sound; complete only where its unsat is trusted, not with "
                "the 2.0.0 wheel)",
                queries=("verify",))
register_oracle("attack", "oracles.attack:AttackOracle",
                "PGD attack with restarts (falsifier only: FALSIFIED or UNKNOWN)", queries=("verify",))
register_oracle("gmm", "oracles.gmm:GmmOracle",
                "closed form on linear classifiers (latent-mixture models with a linear encoder; exact), CROWN otherwise "
                "(sound)", queries=("verify",))
register_oracle("cascade", cascade, "attack, crown, alpha-crown, then milp on what is still unknown", queries=_REGION)

__all__ = [
    "DEFAULT_CASCADE",
    "ENTRY_POINT_GROUP",
    "QUERIES",
    "AlphaCrownOracle",
    "Answer",
    "AttackOracle",
    "BabOracle",
    "Capabilities",
    "Cascade",
    "CrownOracle",
    "Distance",
    "Extreme",
    "GmmOracle",
    "InputSplitOracle",
    "LirpaOracle",
    "MarabouOracle",
    "MilpOracle",
    "Oracle",
    "OracleStats",
    "RegionAnswer",
    "RegionVerdict",
    "Verdict",
    "accepts_option",
    "cascade",
    "lirpa_available",
    "make_oracle",
    "marabou_available",
    "min_adversarial_distance",
    "oracle_entries",
    "oracle_queries",
    "register_oracle",
    "require_queries",
]

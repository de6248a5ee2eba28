"""Verifier backends behind one batched interface (see :mod:`oracles.base`).

Built-in names (the ``--oracle`` values): ``crown`` (default), ``alpha-crown``, ``milp``,
``bab``, ``lirpa`` and ``marabou`` (optional packages), ``attack`` (falsifier only), and
``cascade`` (attack, crown, alpha-crown, then milp). ``"a+b+c"`` composes any of them.
"""

from __future__ import annotations

from typing import Any

from parallelepipedonn.network import Network

from .attack import AttackOracle
from .bab import BabOracle
from .base import Answer, Capabilities, Extreme, Oracle, OracleStats, RegionAnswer, RegionVerdict, Verdict
from .cascade import Cascade
from .crown import AlphaCrownOracle, CrownOracle
from .distance import Distance, min_adversarial_distance
from .lirpa import LirpaOracle, lirpa_available
from .marabou import MarabouOracle, marabou_available
from .milp import MilpOracle
from .registry import ENTRY_POINT_GROUP, accepts_option, make_oracle, oracle_entries, register_oracle

DEFAULT_CASCADE = ("attack", "crown", "alpha-crown", "milp")


def cascade(network: Network, *, stages: tuple[str, ...] = DEFAULT_CASCADE, device: str = "cpu",
            time_limit: float | None = None) -> Cascade:
    """attack → crown → alpha-crown → milp: each asked only where the previous said UNKNOWN."""
    options: dict[str, Any] = {"device": device}
    if time_limit is not None:
        options["time_limit"] = time_limit
    return make_oracle("+".join(stages), network, **options)  # type: ignore[return-value]


register_oracle("crown", CrownOracle, "CROWN bound propagation (sound, incomplete, batched)")
register_oracle("alpha-crown", AlphaCrownOracle, "alpha-CROWN: CROWN with optimised ReLU slopes (sound, incomplete)")
register_oracle("milp", MilpOracle, "exact MILP encoding with pyomo, solved by HiGHS (sound, complete)")
register_oracle("bab", BabOracle, "branch and bound with alpha/beta-CROWN bounds and LP leaves (sound, complete)")
register_oracle("lirpa", LirpaOracle, "auto_LiRPA IBP/CROWN/alpha-CROWN (optional, from source; sound, incomplete)")
register_oracle("marabou", MarabouOracle, "Marabou via maraboupy 2.0 (optional; sound, complete)")
register_oracle("attack", AttackOracle, "PGD attack with restarts (falsifier only: FALSIFIED or UNKNOWN)")
register_oracle("cascade", cascade, "attack, crown, alpha-crown, then milp on what is still unknown")

__all__ = [
    "AlphaCrownOracle", "Answer", "AttackOracle", "BabOracle", "Capabilities", "Cascade", "CrownOracle",
    "DEFAULT_CASCADE", "Distance", "ENTRY_POINT_GROUP", "Extreme", "LirpaOracle", "MarabouOracle", "MilpOracle",
    "Oracle", "OracleStats", "RegionAnswer", "RegionVerdict", "Verdict", "accepts_option", "cascade",
    "lirpa_available", "make_oracle", "marabou_available", "min_adversarial_distance", "oracle_entries",
    "register_oracle",
]

"""Verifier backends behind one batched interface (see :mod:`oracles.base`).

Built-in names: ``crown`` (default), ``attack``.
"""

from .attack import AttackOracle
from .base import Answer, Capabilities, Oracle, OracleStats, Verdict
from .crown import CrownOracle
from .registry import ENTRY_POINT_GROUP, make_oracle, oracle_entries, register_oracle

register_oracle("crown", CrownOracle, "CROWN bound propagation (sound, incomplete, batched)")
register_oracle("attack", AttackOracle, "PGD attack with restarts (falsifier only: FALSIFIED or UNKNOWN)")

__all__ = [
    "Answer", "AttackOracle", "Capabilities", "CrownOracle", "ENTRY_POINT_GROUP", "Oracle", "OracleStats",
    "Verdict", "make_oracle", "oracle_entries", "register_oracle",
]

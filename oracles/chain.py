"""The bridge from the DAG IR to the chain oracles.

Some backends (marabou, lirpa, crown's and alpha-crown's class extremes, the relaxed
dual boxes) read only a chain :class:`~parallelepipedonn.network.Network` (``crown``,
``alpha-crown``, ``milp``, ``bab`` and ``attack`` read any graph as it is). Given a
:class:`~parallelepipedonn.graph.Graph`, they call :func:`chain_network`: a graph that is
a Dense/ReLU chain gives its chain unchanged; a graph whose ReLUs form a chain
(convolutions, pooling, ...) is expanded into dense affine maps
(:meth:`Graph.chain_expansion <parallelepipedonn.graph.Graph.chain_expansion>`), and the
oracle records the expansion in its settings (``bridge``: whether the chain has exactly
the graph's semantics, the digests of both); a residual graph, one too large to expand,
or one whose expansion is not exact (composing two rounding nodes of a stage rounds, and
with cancelling weights a proof about the composed matrices says nothing of the graph:
an adversarial review had lirpa and marabou verify a box holding a misclassified point),
is refused with a one-line error that names the oracle and what it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parallelepipedonn.errors import ModelTooLargeError, NotAChainError, OracleError
from parallelepipedonn.network import Network

if TYPE_CHECKING:
    from parallelepipedonn.graph import Graph

#: The oracles that read any graph as it is (their classes set ``reads_graphs``).
GRAPH_ORACLES = ("crown", "alpha-crown", "milp", "bab", "input-split", "attack")


def chain_network(network: Network | Graph, who: str,
                  instead: str | None = None) -> tuple[Network, dict[str, Any] | None]:
    """The chain ``who`` (an oracle's name, or what needs the chain) reads for ``network``
    and the record of the expansion (``None`` when nothing was expanded). ``instead``: what
    the errors suggest (default: the oracles that read graphs).

    Raises :class:`OracleError` for a graph whose ReLUs do not form a chain or whose
    expansion is not exact, and :class:`ModelTooLargeError` when its dense expansion
    exceeds the importer's limits."""
    if isinstance(network, Network):
        return network, None
    graph_oracles = f"{', '.join(GRAPH_ORACLES[:-1])} or {GRAPH_ORACLES[-1]}"
    use = instead or f"{graph_oracles} (or a cascade of them, e.g. crown+milp), which read the graph as it is"
    chain = network.as_network()
    if chain is not None:
        return chain, None
    try:
        expansion = network.chain_expansion()
    except NotAChainError as exc:
        raise OracleError(f"{who} supports chain networks (convolutions and pooling are expanded into dense "
                          f"matrices); this model is not one: {exc} — use {use}") from exc
    except ModelTooLargeError as exc:
        raise ModelTooLargeError(f"{who} reads the model as a chain of dense affine maps: {exc} — use "
                                 f"{instead or 'crown, milp or bab, which read the graph as it is'}") from exc
    if not expansion.exact:
        raise OracleError(f"{who} reads the model as a chain of dense affine maps, and this graph's is not exact: "
                          "composing its linear nodes between two ReLUs in float64 rounds (e.g. a convolution after an "
                          "input normalisation, a pooling after a convolution; with cancelling weights by far more "
                          f"than the last bits), so a proof would be about other weights — use {use}")
    return expansion.network, expansion.record()

"""Time and peak memory of CrownOracle.verify on a CIFAR-size convnet (issue 14).

3x32x32 -> conv 16ch 3x3 s1 p1 -> relu -> conv 32ch 4x4 s2 p1 -> relu -> flatten -> dense 100
-> relu -> dense 10, random weights (He scaling); one box of radius 1/255 around points of
[0, 1]^n, batch 1 and 16, float64 and float32, one thread. Run:
``python benchmarks/graph_crown_cifar.py [dtype batch]`` (one configuration per process, so
that the peak memory is that configuration's)."""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import torch

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph


def cifar_convnet(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)

    def he(shape: tuple[int, ...], fan: int) -> np.ndarray:
        return rng.normal(0, np.sqrt(2.0 / fan), shape)

    nodes: list[gn.Node] = [gn.Input(inputs=(), shape=(3, 32, 32))]
    nodes.append(gn.Conv2d(inputs=(0,), shape=(16, 32, 32), in_shape=(3, 32, 32), weight=he((16, 3, 3, 3), 27),
                           bias_=rng.normal(0, 0.05, 16), pads=(1, 1, 1, 1)))
    nodes.append(gn.ReLU(inputs=(1,), shape=(16, 32, 32)))
    nodes.append(gn.Conv2d(inputs=(2,), shape=(32, 16, 16), in_shape=(16, 32, 32), weight=he((32, 16, 4, 4), 256),
                           bias_=rng.normal(0, 0.05, 32), stride=(2, 2), pads=(1, 1, 1, 1)))
    nodes.append(gn.ReLU(inputs=(3,), shape=(32, 16, 16)))
    nodes.append(gn.Reshape(inputs=(4,), shape=(8192,), in_shape=(32, 16, 16)))
    nodes.append(gn.Dense(inputs=(5,), shape=(100,), in_shape=(8192,), weight=he((100, 8192), 8192),
                          bias_=rng.normal(0, 0.05, 100)))
    nodes.append(gn.ReLU(inputs=(6,), shape=(100,)))
    nodes.append(gn.Dense(inputs=(7,), shape=(10,), in_shape=(100,), weight=he((10, 100), 100),
                          bias_=np.zeros(10)))
    return Graph((3, 32, 32), tuple(nodes), "cifar-convnet")


def main() -> None:
    from oracles.crown import CrownOracle

    torch.set_num_threads(1)
    dtype, batch = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) > 2 else ("float64", 1)
    g = cifar_convnet()
    rng = np.random.default_rng(1)
    x = rng.random((batch, g.n_inputs))
    label = int(g.predict(x[:1])[0])
    oracle = CrownOracle(g, dtype=dtype)
    eps = 1 / 255
    oracle.verify(x[:1] - eps, x[:1] + eps, label)  # warm-up
    start = time.perf_counter()
    answers = oracle.verify(x - eps, x + eps, label)
    seconds = time.perf_counter() - start
    margins = [a.margin for a in answers]
    print(json.dumps({"dtype": dtype, "batch": batch, "seconds": round(seconds, 3),
                      "seconds_per_input": round(seconds / batch, 3),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "verified": sum(a.verified for a in answers), "worst_margin": min(margins),
                      "best_margin": max(margins)}))


if __name__ == "__main__":
    main()

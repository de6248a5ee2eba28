"""Tiny DAG networks (parallelepipedonn.graph) that the graph tests build themselves."""

from __future__ import annotations

import numpy as np

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph


class Builder:
    """Appends nodes to a graph under construction; each method returns the node's index."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0) -> None:
        self.nodes: list[gn.Node] = [gn.Input(inputs=(), shape=input_shape, name="x")]
        self.rng = np.random.default_rng(seed)

    def shape(self, i: int) -> tuple[int, ...]:
        return self.nodes[i].shape

    def _add(self, node: gn.Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def conv(self, i: int, c_out: int, k: int | tuple[int, int], stride: int = 1, pad: int | tuple = 0,
             dilation: int = 1, groups: int = 1, scale: float = 1.0) -> int:
        c_in, h, w = self.shape(i)
        kh, kw = (k, k) if isinstance(k, int) else k
        pads = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
        fan = c_in // groups * kh * kw
        weight = self.rng.normal(0, scale / np.sqrt(fan), (c_out, c_in // groups, kh, kw))
        bias = self.rng.normal(0, 0.1, c_out)
        ho = gn.conv_output_size(h, kh, stride, dilation, pads[0] + pads[2])
        wo = gn.conv_output_size(w, kw, stride, dilation, pads[1] + pads[3])
        return self._add(gn.Conv2d(inputs=(i,), shape=(c_out, ho, wo), in_shape=(c_in, h, w), weight=weight,
                                   bias_=bias, stride=(stride, stride), pads=pads, dilation=(dilation, dilation),
                                   groups=groups))

    def convt(self, i: int, c_out: int, k: int | tuple[int, int], stride: int | tuple[int, int] = 1,
              pads: tuple[int, int, int, int] = (0, 0, 0, 0), output_padding: tuple[int, int] = (0, 0),
              dilation: int | tuple[int, int] = 1, groups: int = 1) -> int:
        c_in, h, w = self.shape(i)
        kh, kw = (k, k) if isinstance(k, int) else k
        s = (stride, stride) if isinstance(stride, int) else tuple(stride)
        d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        weight = self.rng.normal(0, 1 / np.sqrt(c_in // groups * kh * kw), (c_in, c_out // groups, kh, kw))
        out = (c_out, (h - 1) * s[0] + d[0] * (kh - 1) + 1 + output_padding[0] - pads[0] - pads[2],
               (w - 1) * s[1] + d[1] * (kw - 1) + 1 + output_padding[1] - pads[1] - pads[3])
        return self._add(gn.ConvTranspose2d(inputs=(i,), shape=out, in_shape=(c_in, h, w), weight=weight,
                                            bias_=self.rng.normal(0, 0.1, c_out), stride=s, pads=pads, dilation=d,
                                            output_padding=output_padding, groups=groups))

    def avgpool(self, i: int, k: int, stride: int, pad: int = 0, include_pad: bool = False) -> int:
        c, h, w = self.shape(i)
        ho = gn.conv_output_size(h, k, stride, 1, 2 * pad)
        wo = gn.conv_output_size(w, k, stride, 1, 2 * pad)
        return self._add(gn.AvgPool2d(inputs=(i,), shape=(c, ho, wo), in_shape=(c, h, w), kernel=(k, k),
                                      stride=(stride, stride), pads=(pad,) * 4, count_include_pad=include_pad))

    def relu(self, i: int) -> int:
        return self._add(gn.ReLU(inputs=(i,), shape=self.shape(i)))

    def add(self, a: int, b: int) -> int:
        return self._add(gn.Add(inputs=(a, b), shape=self.shape(a)))

    def sub(self, a: int, b: int) -> int:
        return self._add(gn.Sub(inputs=(a, b), shape=self.shape(a)))

    def concat(self, parts: list[int], axis: int = 0) -> int:
        shape = list(self.shape(parts[0]))
        shape[axis] = sum(self.shape(p)[axis] for p in parts)
        return self._add(gn.Concat(inputs=tuple(parts), shape=tuple(shape), axis=axis))

    def flatten(self, i: int) -> int:
        return self._add(gn.Reshape(inputs=(i,), shape=(int(np.prod(self.shape(i))),), in_shape=self.shape(i)))

    def transpose(self, i: int, perm: tuple[int, ...]) -> int:
        s = self.shape(i)
        return self._add(gn.Transpose(inputs=(i,), shape=tuple(s[p] for p in perm), in_shape=s, perm=perm))

    def pad(self, i: int, pads: tuple[int, ...]) -> int:
        s = self.shape(i)
        r = len(s)
        return self._add(gn.Pad(inputs=(i,), shape=tuple(s[j] + pads[j] + pads[j + r] for j in range(r)),
                                in_shape=s, pads=pads))

    def scale(self, i: int, scale: np.ndarray, shift: np.ndarray) -> int:
        return self._add(gn.Scale(inputs=(i,), shape=self.shape(i), in_shape=self.shape(i), scale=scale, shift=shift))

    def dense(self, i: int, out: int, scale: float = 1.0, weight: np.ndarray | None = None,
              bias: np.ndarray | None = None) -> int:
        (n,) = self.shape(i)
        w = self.rng.normal(0, scale / np.sqrt(n), (out, n)) if weight is None else weight
        b = self.rng.normal(0, 0.1, out) if bias is None else bias
        return self._add(gn.Dense(inputs=(i,), shape=(out,), in_shape=(n,), weight=w, bias_=b))

    def graph(self, name: str = "test-graph") -> Graph:
        return Graph(self.nodes[0].shape, tuple(self.nodes), name)


def small_cnn(seed: int = 0, side: int = 7, classes: int = 3) -> Graph:
    """conv (stride 2, padding 1) -> relu -> avgpool -> flatten -> dense -> relu -> dense."""
    b = Builder((2, side, side), seed)
    h = b.relu(b.conv(0, 4, 3, stride=2, pad=1))
    h = b.flatten(b.avgpool(h, 2, 1))
    h = b.relu(b.dense(h, 8))
    b.dense(h, classes)
    return b.graph("small-cnn")


def residual(seed: int = 0, side: int = 5, channels: int = 3, classes: int = 3) -> Graph:
    """conv -> relu -> [conv -> relu -> conv] + skip -> relu -> flatten -> dense."""
    b = Builder((1, side, side), seed)
    h = b.relu(b.conv(0, channels, 3, pad=1))
    r = b.conv(b.relu(b.conv(h, channels, 3, pad=1)), channels, 3, pad=1)
    h = b.relu(b.add(r, h))
    b.dense(b.flatten(h), classes)
    return b.graph("residual")


def mixed(seed: int = 0, classes: int = 3) -> Graph:
    """Every node type: normalisation, grouped and dilated convs, Sub, Concat, Pad,
    Transpose, average pooling with padding, global pooling."""
    b = Builder((2, 6, 6), seed)
    x = b.scale(0, np.array([0.5, 2.0]).reshape(2, 1, 1), np.array([-0.1, 0.2]).reshape(2, 1, 1))
    p = b.relu(b.conv(x, 4, 3, pad=(1, 2, 2, 2), dilation=2))  # (4, 5, 6)
    q = b.relu(b.conv(b.pad(x, (0, 1, 0, 0, 0, 1)), 4, (2, 3), stride=2, groups=2))  # (4, 3, 3)
    q = b.transpose(b.conv(q, 4, 1), (0, 2, 1))
    c = b.concat([b.avgpool(p, 3, 2, pad=1), q], axis=0)  # (8, 3, 3)
    s = b.relu(b.sub(c, b.conv(c, 8, 3, pad=1, groups=4)))
    g = b.avgpool(s, 3, 1)  # global pooling
    h = b.relu(b.dense(b.flatten(g), 6))
    b.dense(h, classes)
    return b.graph("mixed")


def transposed(seed: int = 0, classes: int = 3) -> Graph:
    """conv -> relu -> transposed conv (stride 2, pads, output padding) -> relu -> grouped
    dilated transposed conv -> relu -> strided conv -> relu -> flatten -> dense (a
    generator's upsampling, then a discriminator's convolutions)."""
    b = Builder((2, 4, 4), seed)
    h = b.relu(b.conv(0, 3, 3, pad=1))  # (3, 4, 4)
    h = b.relu(b.convt(h, 4, 3, stride=2, pads=(1, 1, 1, 0), output_padding=(1, 0)))  # (4, 8, 8)
    h = b.relu(b.convt(h, 2, (2, 3), stride=(1, 2), dilation=(2, 1), groups=2))  # (2, 10, 17)
    h = b.relu(b.conv(h, 4, 3, stride=2, scale=2.0))  # (4, 4, 8)
    b.dense(b.flatten(h), classes)
    return b.graph("transposed")

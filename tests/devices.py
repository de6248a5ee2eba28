"""The torch devices that device-parametrised specifications run on: the CPU always, and
CUDA where torch sees a GPU. CI has none, so there the CUDA cases do not exist;
``benchmarks/device_check.sh`` runs them on a GPU machine (README: "On a GPU")."""

from __future__ import annotations

import torch

DEVICES: tuple[str, ...] = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

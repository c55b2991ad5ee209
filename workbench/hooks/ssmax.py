"""Scalable-Softmax's max-weight table (Nakanishi 2025, §2): one key at a high logit, the other n − 1 at a low
one. Softmax gives the high key e^a / (e^a + (n − 1) e^b), which fades as n grows; SSMax multiplies every logit
by s · log n first, so the gap grows with n and the key keeps its weight."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd


def max_weight(n: int, high: float = 3.0, low: float = -2.0, scale: float = 1.0) -> float:
    """Weight of the one key at logit `high` among n keys, the others at `low`, every logit × `scale`."""
    return 1.0 / (1.0 + (n - 1) * math.exp(-scale * (high - low)))


def max_weight_table(ns: Sequence[int] = (10, 100, 1000, 10000), s: float = 0.43, high: float = 3.0,
                     low: float = -2.0) -> pd.DataFrame:
    """Max attention weight by number of keys n: softmax (scale 1) and SSMax (scale s · ln n)."""
    return pd.DataFrame({"n": list(ns),
                         "softmax": [max_weight(n, high, low) for n in ns],
                         "ssmax": [max_weight(n, high, low, s * math.log(n)) for n in ns]})

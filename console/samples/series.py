"""One metric over a window, as charts and backfill hand it around."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one GPU or node over a window: fresh arrays, x in epoch seconds, NaN for gaps."""

    t: np.ndarray
    y: np.ndarray

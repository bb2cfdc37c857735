"""Argument types for amounts of time: finite and positive, or argparse's usage error with what was wrong.

``--duration nan`` would otherwise never end and ``--duration -5`` would end at once having done nothing, both
exiting 0; a usage error (exit 2, or the command's own usage code) says so instead.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SECONDS = 10 * 365 * 86400.0  # ten years: anything longer is a typo, and bigger numbers overflow timers


def positive(unit: str, *, most: float = MAX_SECONDS, zero: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number > 0 (>= 0 with ``zero``) and at most ``most`` (in ``unit``, named in
    the message)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number of {unit}, not {text!r}")
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0 {unit}, not {text}")
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g} {unit}, not {text}")
        return value

    parse.__name__ = f"{unit}"  # argparse names the type in its own messages
    return parse


seconds = positive("seconds")
seconds_or_zero = positive("seconds", zero=True)  # --smoke-test 0: quit on the first frame
hours = positive("hours", most=MAX_SECONDS / 3600)

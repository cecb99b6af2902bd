"""Bootstrap intervals for faithfulness over prompts, from the per-prompt metric values of passes already made.

``f = (mean m(C) - mean m(empty)) / (mean m(N) - mean m(empty))``: each of ``samples`` resamples draws the
prompts with replacement (the same draw for the three runs, which share their prompts) and recomputes ``f``;
the interval is the percentile interval at ``level`` (95 %: the 2.5th and 97.5th percentiles). Resamples whose
full and empty means coincide have no ``f`` and are left out. Pure numpy: no forward pass is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BOOTSTRAP = 200


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval."""

    low: float
    high: float


def faithfulness_interval(circuit: np.ndarray, full: np.ndarray, empty: np.ndarray, samples: int = DEFAULT_BOOTSTRAP,
                          level: float = 0.95, seed: int = 0) -> Interval | None:
    """The interval of faithfulness from per-prompt metrics of the circuit's run, the full model's and the empty
    circuit's (``[prompt]`` each); None when ``samples`` is 0 or no resample has a faithfulness."""
    if not samples:
        return None
    n = len(circuit)
    if not n or len(full) != n or len(empty) != n:
        raise ValueError(f"per-prompt values of one run each, alike in length: got {n}, {len(full)}, {len(empty)}")
    draws = np.random.default_rng(seed).integers(0, n, (samples, n))
    c, f, e = (np.asarray(x, dtype=np.float64)[draws].mean(axis=1) for x in (circuit, full, empty))
    defined = f != e
    if not defined.any():
        return None
    ratio = (c[defined] - e[defined]) / (f[defined] - e[defined])
    low, high = np.percentile(ratio, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(low), float(high))


def with_interval(value: float | None, interval: tuple[float, float] | list[float] | None) -> str | None:
    """A value with its interval, as ``0.812 [0.741, 0.868]`` (the value alone without one)."""
    if value is None:
        return None
    return f"{value:.3f}" + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")

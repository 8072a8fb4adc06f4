"""A recording's waveform as a PNG, drawn on the server: the caller above, the agent below.

The browser gets a picture, not samples: the page shows where people spoke without a
script decoding audio. Min/max envelopes per pixel column, computed with numpy.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

WIDTH_PX = 900
HEIGHT_PX = 180


def envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column minimum and maximum of `samples` (1-D), in [-1, 1]."""
    if samples.size == 0:
        zeros = np.zeros(columns)
        return zeros, zeros
    edges = np.linspace(0, samples.size, columns + 1).astype(int)
    edges[-1] = samples.size
    starts = np.minimum(edges[:-1], samples.size - 1)
    low = np.minimum.reduceat(samples, starts)
    high = np.maximum.reduceat(samples, starts)
    return low, high


def waveform_png(wav: bytes, *, labels: tuple[str, str] = ("caller", "agent")) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    seconds = frames.shape[0] / rate if rate else 0.0
    channels = min(2, frames.shape[1])
    fig, axes = plt.subplots(
        channels, 1, figsize=(WIDTH_PX / 100, HEIGHT_PX / 100), dpi=100, squeeze=False
    )
    x = np.linspace(0, seconds, WIDTH_PX)
    for index in range(channels):
        ax = axes[index][0]
        low, high = envelope(frames[:, index], WIDTH_PX)
        ax.fill_between(x, low, high, color="#1f77b4" if index == 0 else "#ff7f0e", linewidth=0)
        ax.set_ylim(-1, 1)
        ax.set_xlim(0, max(seconds, 0.001))
        ax.set_yticks([])
        ax.set_ylabel(labels[index], fontsize=7, rotation=0, ha="right", va="center")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        if index < channels - 1:
            ax.set_xticks([])
        else:
            ax.tick_params(labelsize=7)
            ax.set_xlabel("seconds", fontsize=7)
    fig.tight_layout(pad=0.3)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()

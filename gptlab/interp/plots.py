"""PNG plots of heads: a layer x head heatmap per metric, the grid of every head's pattern, metrics over steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _short(tok: str, n: int = 8) -> str:
    tok = tok.replace("\n", "\u21b5").replace("\t", "\u2192")
    return tok if len(tok) <= n else tok[: n - 1] + "\u2026"


def _save(fig, path: str | Path) -> Path:
    """Write the figure and free it (every plot here ends with this)."""
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _tick_positions(T: int, max_labels: int) -> np.ndarray:
    step = max(1, int(np.ceil(T / max_labels)))
    return np.arange(0, T, step)


def _cell_digits(vmax: float) -> int:
    """Decimals for the numbers in heatmap cells: 2, more for small values (so 0.004 does not read 0.00)."""
    if not vmax > 0:
        return 2
    return int(min(4, max(2, 1 - np.floor(np.log10(vmax)))))


def metric_heatmap(values: np.ndarray, name: str, path: str | Path, kv_of: list[int] | None = None) -> Path:
    """Layer x head heatmap of one metric `(n_layer, n_head)`, each cell annotated with its value.

    Constrained layout places the axis labels and the colour bar with its tick labels inside the figure.
    """
    L, H = values.shape
    fig, ax = plt.subplots(figsize=(2.2 + 0.55 * H, 1.5 + 0.45 * L), dpi=110, layout="constrained")
    finite = values[np.isfinite(values)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    signed = finite.size and finite.min() < 0
    cmap, vmin = ("RdBu_r", -vmax) if signed else ("viridis", 0.0)
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax or 1.0, aspect="auto")
    digits = _cell_digits(vmax)
    if L * H <= 400:
        for l in range(L):
            for h in range(H):
                v = values[l, h]
                ax.text(
                    h,
                    l,
                    "nan" if not np.isfinite(v) else f"{v:.{digits}f}",
                    ha="center",
                    va="center",
                    fontsize=7 if digits == 2 else 6,
                    color="white" if (abs(v) > 0.6 * vmax if signed else v < 0.6 * vmax) else "black",
                )
    ax.set_xticks(range(H))
    ax.set_xticklabels([f"{h}" if kv_of is None else f"{h}\nkv{kv_of[h]}" for h in range(H)], fontsize=7)
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(name, fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.05)
    cb.ax.tick_params(labelsize=7)
    return _save(fig, path)


def pattern_grid(
    patterns: np.ndarray,
    tokens: list[str],
    path: str | Path,
    kv_of: list[int] | None = None,
    max_labels: int = 24,
) -> Path:
    """Every head's attention pattern `(n_layer, n_head, T, T)` in one image, token labels on the edges.

    The heads are tiled into one mosaic drawn with a single imshow (fast even for 12 x 12 heads at 256+
    tokens); rows of tiles are layers, columns heads; colour is the square root of the weight.
    """
    L, H, T, _ = patterns.shape
    gap = max(2, T // 16)
    step = T + gap
    mosaic = np.full((L * step - gap, H * step - gap), np.nan)
    for l in range(L):
        for h in range(H):
            tile = np.sqrt(np.clip(patterns[l, h], 0, 1))
            tile[np.triu_indices(T, 1)] = np.nan  # the masked future: white
            mosaic[l * step : l * step + T, h * step : h * step + T] = tile
    tile_in = min(2.2, max(1.2, 13.0 / max(L, H)))
    fw, fh = 1.3 + tile_in * H, 1.4 + tile_in * L  # inches: 1.0 left + 0.3 right, 0.9 bottom + 0.5 top
    fig = plt.figure(figsize=(fw, fh), dpi=max(80, min(160, int(1.1 * T / tile_in))))
    ax = fig.add_axes((1.0 / fw, 0.9 / fh, tile_in * H / fw, tile_in * L / fh))
    cmap = plt.get_cmap("Blues").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ticks = _tick_positions(T, max_labels if L <= 6 else max_labels // 2)
    labels = [_short(tokens[i]) for i in ticks]
    fs = 5 if L * len(ticks) <= 160 else 4
    ax.set_yticks([l * step + t for l in range(L) for t in ticks])
    ax.set_yticklabels(labels * L, fontsize=fs)
    ax.set_xticks([(H - 1) * step + t for t in ticks])
    ax.set_xticklabels(labels, fontsize=fs, rotation=90)
    for l in range(L):
        for h in range(H):
            name = f"L{l} H{h}" + (f" kv{kv_of[h]}" if kv_of is not None else "")
            ax.text(h * step + T - 1, l * step + 1, name, ha="right", va="top", fontsize=7, color="0.25")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.suptitle(
        "attention patterns: tiles = layers (rows) x heads (columns); in a tile, rows = query, "
        "columns = key; colour = sqrt(weight)",
        fontsize=8,
        y=1 - 0.15 / fh,
        va="top",
    )
    return _save(fig, path)


def head_pattern(
    pattern: np.ndarray, tokens: list[str], path: str | Path, title: str, max_labels: int = 64
) -> Path:
    """One head's pattern `(T, T)` large, with token labels on both axes, written to `path`."""
    fig = pattern_figure(pattern, tokens, title, max_labels)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def pattern_figure(pattern, tokens: list[str], title: str = "", max_labels: int = 64):
    """One head's pattern `(T, T)` (an array or a tensor) as a matplotlib Figure, token labels on both axes: a
    notebook shows it inline (`fig.savefig(path)` writes it)."""
    pattern = np.asarray(pattern.detach().cpu() if hasattr(pattern, "detach") else pattern, dtype=np.float32)
    T = pattern.shape[-1]
    size = min(14.0, 3 + T * 0.12)
    fig, ax = plt.subplots(figsize=(size, size), dpi=90)
    ax.imshow(pattern, cmap="Blues", vmin=0, vmax=max(float(pattern.max()), 1e-6), interpolation="nearest")
    ticks = _tick_positions(T, max_labels)
    labels = [_short(tokens[i]) for i in ticks]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def metric_over_steps(
    steps: list[int], values: np.ndarray, metric: str, path: str | Path, top: int = 4
) -> Path:
    """One line per head of `values (n_steps, n_layer, n_head)` over `steps`; the top heads get a legend."""
    S, L, H = values.shape
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    final = np.nan_to_num(values[-1], nan=-np.inf).reshape(-1)
    best = set(np.argsort(-final)[:top].tolist())
    cmap = plt.get_cmap("tab10")
    for l in range(L):
        for h in range(H):
            idx = l * H + h
            if idx in best:
                ax.plot(
                    steps,
                    values[:, l, h],
                    color=cmap(len(ax.get_legend_handles_labels()[0]) % 10),
                    lw=2,
                    marker="o" if S <= 30 else None,
                    ms=3,
                    label=f"L{l} H{h}",
                    zorder=3,
                )
            else:
                ax.plot(steps, values[:, l, h], color="0.75", lw=0.8, zorder=1)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per head over training (grey: other heads)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def composition_matrices(
    scores: dict[str, np.ndarray], baseline: dict[str, float], path: str | Path, kinds=("Q", "K", "V")
) -> Path:
    """One panel per kind: rows = writing head (layer_a, head_a), columns = reading head (layer_b, head_b).

    `scores[kind]` is `(L, H, L, H)` (NaN unless layer_a < layer_b). Rows run over layers 0..L-2, columns over
    1..L-1; cells are the score, the colour scale starts at 0 and the random baseline is marked on the colour bar.
    """
    L, H = next(iter(scores.values())).shape[:2]
    n = (L - 1) * H
    vmax = max(float(np.nanmax(scores[k])) for k in kinds)
    cell = min(0.45, 4.5 / n)
    fig, axes = plt.subplots(1, len(kinds), figsize=(len(kinds) * (1.6 + cell * n), 1.6 + cell * n), dpi=110)
    labels = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        m = scores[kind].reshape(L * H, L * H)[:n, H:]  # writers in layers < L-1, readers in layers > 0
        im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax or 1.0, interpolation="nearest")
        if n <= 24:
            for i in range(n):
                for j in range(n):
                    if np.isfinite(m[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{m[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=5,
                            color="white" if m[i, j] < 0.6 * vmax else "black",
                        )
        step = max(1, n // 24)
        ax.set_xticks(range(0, n, step))
        ax.set_xticklabels(labels[H:][::step], rotation=90, fontsize=6)
        ax.set_yticks(range(0, n, step))
        ax.set_yticklabels(labels[:n][::step], fontsize=6)
        ax.set_xlabel("reading head (later layer)", fontsize=8)
        ax.set_ylabel("writing head (earlier layer)", fontsize=8)
        ax.set_title(f"{kind}-composition (random: {baseline[kind]:.3f})", fontsize=9)
        cb = fig.colorbar(im, ax=ax, fraction=0.046)
        cb.ax.axhline(baseline[kind], color="cyan", lw=2)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle(
        "composition scores ||W_OV^a W^b||_F / (||W_OV^a||_F ||W^b||_F); cyan line: random baseline",
        fontsize=8,
    )
    fig.tight_layout()
    return _save(fig, path)


def logit_lens(rows: list[dict], path: str | Path) -> Path:
    """Loss and mean rank of the correct next token after each layer (the logit lens)."""
    labels = [str(r["layer"]) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 3.4), dpi=110)
    ax.plot(x, [r["loss"] for r in rows], "o-", color="C0", label="loss")
    ax.set_ylabel("loss of the next token (nats)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(x, [r["rank"] for r in rows], "s--", color="C3", label="mean rank")
    ax2.set_ylabel("mean rank (1 = top)", color="C3")
    ax2.set_ylim(bottom=0)
    ax.set_xticks(x)
    ax.set_xticklabels(["embed" if t == "embed" else f"after L{t}" for t in labels], fontsize=7)
    ax.set_title(
        "logit lens: the residual after each layer\nthrough ln_f and the unembedding, on the text", fontsize=9
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)

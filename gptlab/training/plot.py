"""The loss-curve PNG written at the end of a run."""

from __future__ import annotations

from pathlib import Path


def plot_losses(rows: list[dict], out_path: Path, title: str = "") -> Path | None:
    """Train loss (every logged step) and val loss (every evaluation) of metrics rows, against step."""
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("kind") == "train" and "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval" and "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptlab.rundir.files import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train (batch)", alpha=0.6, lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val", lw=2)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out_path

"""matplotlib without a display (its Agg backend), and figures saved as PNG atomically (tinylm.atomic).
matplotlib is imported only when a plot is made: a missing one raises ModuleNotFoundError there."""

from pathlib import Path

from tinylm.atomic import atomic_file


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """Write `fig` to `path` as a 100 dpi PNG, atomically, and close it."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pyplot().close(fig)

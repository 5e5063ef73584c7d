"""Per-step metric history kept inside the checkpoint, so a resumed run's curves are whole.

Rows are {"step": s, name: value, ...}: train rows every `log_every` optimizer steps, val rows after each
validation. Lightning stores the callback's state_dict in every checkpoint; restoring drops nothing and
duplicates nothing. `write(dir)` writes train.csv / val.csv (x = step) and loss.png for DVC plots (loss.png only
where matplotlib is installed: the lent GPU machine, which runs the stages without DVC, lacks it).

Wall-clock figures (WALL_CLOCK: tokens/s, MFU) go to `speed` rows instead, kept out of the checkpoint and the
CSVs, so that the checkpoint and the plots are a function of the inputs alone (two runs, or a run and its
killed-and-resumed twin, give the same bytes)
and a resumed run's `speed` holds its own steps only.
"""

import json
import warnings
from pathlib import Path

import pytorch_lightning as pl

from tinylm.atomic import write_csv
from tinylm.plots import pyplot, save_png

WALL_CLOCK = ("train/tokens_per_s", "train/mfu")


class MetricHistory(pl.Callback):
    def __init__(self, log_every: int):
        self.log_every = log_every
        self.train: list[dict] = []
        self.val: list[dict] = []
        self.speed: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or (step % self.log_every and step != trainer.max_steps):
            return  # step 0: a gradient-accumulation micro-batch before the first optimizer step
        if self.train and self.train[-1]["step"] == step:
            return  # gradient accumulation: one row per optimizer step
        m = trainer.callback_metrics
        self.train.append({"step": step, **{k: float(v) for k, v in m.items()
                                            if k.startswith("train/") and k not in WALL_CLOCK}})
        self.speed.append({"step": step, **{k: float(m[k]) for k in WALL_CLOCK if k in m}})

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {"step": trainer.global_step, **{k: float(v) for k, v in m.items() if k.startswith("val/")}}
        if self.val and self.val[-1]["step"] == row["step"]:
            self.val[-1] = row
        else:
            self.val.append(row)

    def state_dict(self):
        """The rows as JSON text (floats round-trip exactly): pickling the dicts themselves would give bytes
        that depend on which key strings happen to be one object, so a resumed run's checkpoint would differ."""
        return {"train": json.dumps(self.train), "val": json.dumps(self.val)}

    def load_state_dict(self, state):
        self.train, self.val = json.loads(state["train"]), json.loads(state["val"])

    def write(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", self.train), ("val", self.val)):
            write_csv(out_dir / f"{name}.csv", rows, ["step", *sorted({k for r in rows for k in r} - {"step"})])
        try:
            _plot(out_dir / "loss.png", self.train, self.val)
        except ModuleNotFoundError as e:
            if e.name != "matplotlib":
                raise
            (out_dir / "loss.png").unlink(missing_ok=True)  # never a stale plot beside new CSVs
            warnings.warn("matplotlib is not installed: loss.png not written (pip install matplotlib)", stacklevel=2)


def _plot(path: Path, train: list[dict], val: list[dict]) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for rows, label in ((train, "train/loss"), (val, "val/loss")):
        pts = [(r["step"], r[label]) for r in rows if label in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=label, marker="o" if label.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)

"""Metric lines on stdout for SageMaker's metric definitions (``eval_wer=([0-9.]+)``).

SageMaker reads training metrics from the job's log with regular expressions; a tuning job's
objective is one of them. After each validation (not the sanity check), global rank zero prints::

    step=120 epoch=3 eval_wer=0.412000 eval_cer=0.180000 eval_loss=1.234000
"""

from __future__ import annotations

import math

import lightning.pytorch as pl

#: Logged metric -> name printed for SageMaker.
PRINTED_METRICS = {"val/wer": "eval_wer", "val/cer": "eval_cer", "val/loss": "eval_loss"}
#: Regular expressions for ``MetricDefinitions`` (one capture group: the value).
METRIC_DEFINITIONS = {
    name: rf"{name}=([0-9.]+)" for name in (*PRINTED_METRICS.values(), "train_loss")
}


def metric_line(metrics: dict[str, float], step: int, epoch: int) -> str:
    """The printed line for the metrics present (non-finite values are left out)."""
    parts = [f"step={step}", f"epoch={epoch}"]
    for name, value in metrics.items():
        if math.isfinite(value):
            parts.append(f"{name}={value:.6f}")
    return " ".join(parts)


class MetricLines(pl.Callback):
    """Prints ``eval_wer=...`` (and CER, loss, train loss) after each validation."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        metrics = {
            printed: float(logged[key]) for key, printed in PRINTED_METRICS.items() if key in logged
        }
        if "train/loss" in logged:
            metrics["train_loss"] = float(logged["train/loss"])
        print(metric_line(metrics, trainer.global_step, trainer.current_epoch), flush=True)

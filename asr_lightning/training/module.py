"""The one LightningModule: a Hugging Face ``AutoModelForCTC`` trained with an fp32 CTC loss.

The model is built in :meth:`CTCModule.configure_model`, not in ``__init__``: creating the module
(e.g. while LightningCLI checks a config) downloads nothing, and the Trainer builds the model on
its device when a run starts.

Batches are the dicts of :class:`asr_lightning.data.collate.CTCCollator`; this module reads
``<model input>``, ``attention_mask``, ``input_lengths``, ``labels``, ``ids``, ``texts``,
``skipped`` (with ``skipped_texts``) and, for the per-utterance records, ``details`` and
``skipped_details``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
from lightning.pytorch.utilities import rank_zero_warn

from asr_lightning.audio.augment import LevelMode
from asr_lightning.data.collate import WAVEFORM_INPUT
from asr_lightning.decoding.decoder import CTCDecoder
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.decoding.package import save_decoding
from asr_lightning.errors import ConfigError
from asr_lightning.model import factory
from asr_lightning.model.ctc import ctc_loss, model_inputs, output_lengths
from asr_lightning.model.factory import ScratchModelType
from asr_lightning.model.families import (
    blank_token_id,
    freeze_front_end,
    hidden_size,
    layerdrop,
    padding_exact,
    padding_warning,
)
from asr_lightning.model.features import LEVEL_ATTRIBUTE, samples_per_frame
from asr_lightning.model.metrics import (
    ErrorRates,
    gather_records,
    metric_keys,
    set_name,
    utterance_errors,
    write_jsonl,
)
from asr_lightning.model.optim import (
    ScheduleHorizon,
    SchedulerKind,
    budget_progress,
    build_budget_scheduler,
    build_scheduler,
    parameter_groups,
)
from asr_lightning.model.precision import bf16_warning
from asr_lightning.training.loggers import loggable_hyperparameters, run_dir

log = logging.getLogger(__name__)

Stage = Literal["val", "test", "predict"]
#: The evaluation report ``test`` writes next to its predictions.
REPORT_FILE = "report.html"
UnreadablePolicy = Literal["score", "exclude"]
BLANK_ONLY_WARNING = (
    "every validation transcript has been empty for %d evaluations in a row: the model predicts "
    "only blanks. Likely causes: a learning rate too high (diverged) or too low; a vocabulary or "
    "letter-case mismatch between the transcripts and the tokenizer; too few training steps "
    "(CTC models emit blanks for a while before the first characters); SpecAugment masking too "
    "strong for short clips."
)


class CTCModule(lightning.LightningModule):
    """Fine-tune a pretrained CTC speech model, or train one from scratch."""

    def __init__(
        self,
        model_name_or_path: str | None = "facebook/wav2vec2-base-960h",
        model_type: ScratchModelType | None = None,
        config_overrides: dict[str, Any] | None = None,
        vocab: dict[str, int] | None = None,
        tokenizer_json: str | None = None,
        input_level: LevelMode = "none",
        freeze_feature_encoder: bool | None = None,
        gradient_checkpointing: bool = False,
        mask_time_prob: float | None = None,
        mask_time_length: int | None = None,
        mask_feature_prob: float | None = None,
        mask_feature_length: int | None = None,
        layerdrop: float | None = None,
        ctc_zero_infinity: bool = True,
        ctc_loss_reduction: Literal["mean", "sum"] = "mean",
        learning_rate: float = 1e-4,
        head_learning_rate: float | None = None,
        weight_decay: float = 0.005,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.05,
        scheduler: SchedulerKind = "linear",
        schedule_horizon: ScheduleHorizon = "steps",
        blank_warning_patience: int = 3,
        decoding: dict[str, Any] | None = None,
        unreadable: UnreadablePolicy = "score",
    ) -> None:
        """
        Args:
            model_name_or_path: Hub id or local folder of a pretrained model (``save_pretrained``
                layout, e.g. one written by ``save_hf``); ``None`` to build one from scratch.
            model_type: Architecture built from scratch when ``model_name_or_path`` is None.
            config_overrides: Model configuration settings that differ from the architecture's
                (or checkpoint's) defaults, e.g. ``{hidden_size: 256, num_hidden_layers: 4}``.
            vocab: The data's vocabulary (token -> id, ``<pad>`` = CTC blank), linked from the
                datamodule. Required from scratch; with a checkpoint whose tokenizer disagrees
                with it, the CTC head is replaced by a new one for this vocabulary.
            tokenizer_json: The data's subword tokenizer (``tokenizers`` JSON) whose vocabulary
                ``vocab`` is, linked from the datamodule (``data.tokenizer: bpe`` or
                ``unigram``); ``None`` for a character vocabulary.
            input_level: The level normalization the data applies to every clip (linked from
                ``data.level``). Saved with the feature extractor, so ``transcribe``, ``serve``,
                the ONNX export and the SageMaker handler normalize their audio the same way.
            freeze_feature_encoder: Freeze the convolutional front end: the waveform feature
                encoder of wav2vec2-family models (and OmniASR), the subsampling convolutions of
                filter-bank models (Parakeet, LASR). ``None``: freeze it when fine-tuning a
                pretrained waveform model, train it otherwise.
            gradient_checkpointing: Recompute activations in backward to save memory.
            mask_time_prob: SpecAugment: probability of masking spans of time steps
                (wav2vec2 family only; ``None`` keeps the model's setting).
            mask_time_length: SpecAugment: length of each masked time span, in output frames.
            mask_feature_prob: SpecAugment: probability of masking spans of feature channels.
            mask_feature_length: SpecAugment: length of each masked feature span.
            layerdrop: Probability of skipping each transformer layer in training (``None``
                keeps the model's setting; with DDP, >0 needs find_unused_parameters).
            ctc_zero_infinity: Zero the loss of utterances whose labels cannot fit their frames.
            ctc_loss_reduction: ``mean``: per-utterance loss over its label length, averaged
                over the batch; ``sum``: summed over the batch.
            learning_rate: Peak learning rate of the encoder.
            head_learning_rate: Peak learning rate of the CTC head (``lm_head`` / ``ctc_head``);
                ``None`` for ``learning_rate``.
            weight_decay: AdamW weight decay (not applied to biases and norm weights).
            adam_betas: AdamW betas.
            adam_epsilon: AdamW epsilon.
            warmup_ratio: Fraction of all optimizer steps with linear warmup from zero.
            scheduler: Learning-rate shape after warmup: linear or cosine decay to zero, or
                constant.
            schedule_horizon: What the warmup and decay are fractions of: ``steps``, the run's
                optimizer steps (``trainer.estimated_stepping_batches``, reproducible), or
                ``budget``, whichever of ``trainer.max_time`` and the steps runs out first, so
                a time-limited run anneals to zero at its limit on any machine (the learning
                rate then depends on the machine's speed, so runs are not bit-reproducible).
            blank_warning_patience: Warn after this many consecutive evaluations in which every
                transcript is empty (a model stuck on blanks).
            decoding: How validation, test and predict turn logits into text (greedy, or beam
                search with an LM), as every other runtime does: the fields of
                :class:`~asr_lightning.decoding.options.DecodingOptions`, linked from the
                config's ``decoding`` section (``--decoding.lm an4.arpa``). Saved with the
                Hugging Face folder at the end of ``fit``, LM included.
            unreadable: Validation and test utterances whose audio cannot be read: ``score``
                them as empty transcripts (all their words deleted), so the WER covers the
                whole set, or ``exclude`` them from the error rates. Either way they are
                counted (``<stage>/unreadable``), written to the predictions and listed.
        """
        super().__init__()
        if model_name_or_path is None and model_type is None:
            raise ConfigError("give model_name_or_path (pretrained) or model_type (from scratch)")
        if blank_warning_patience < 1:
            raise ConfigError(f"blank_warning_patience must be >= 1, got {blank_warning_patience}")
        # logged by setup() as loggable_hyperparameters: MLflow refuses names like vocab/<pad>
        self.save_hyperparameters(logger=False)
        self.decoding = DecodingOptions(**(decoding or {}))
        self.decoder: CTCDecoder | None = None  # built with the model
        self.model: Any = None  # transformers *ForCTC, built in configure_model
        self.feature_extractor: Any = None
        self.tokenizer: Any = None
        self.error_rates = torch.nn.ModuleDict({"val": ErrorRates(), "test": ErrorRates()})
        self._records: dict[str, dict[int, list[dict[str, Any]]]] = {"test": {}, "predict": {}}
        self._empty_counts = [0, 0]  # (empty transcripts, transcripts) of this evaluation
        self._blank_only_evaluations = 0
        self._skipped_total = 0
        self._unreadable: dict[str, dict[int, list[tuple[str, str]]]] = {"val": {}, "test": {}}

    # -- model construction ---------------------------------------------------------------

    def configure_model(self) -> None:
        """Build (or download) the model, feature extractor and tokenizer; idempotent."""
        if self.model is not None:
            return
        hp = self.hparams
        model, feature_extractor, tokenizer = factory.build_model(
            hp.model_name_or_path,
            hp.model_type,
            hp.vocab,
            factory.model_settings(hp),
            hp.tokenizer_json,
        )
        self._prepare(model)
        setattr(feature_extractor, LEVEL_ATTRIBUTE, hp.input_level)
        self.model, self.feature_extractor, self.tokenizer = model, feature_extractor, tokenizer
        self.decoder = CTCDecoder(
            tokenizer,
            blank_token_id(model.config),
            samples_per_frame(model, feature_extractor),
            self.decoding,
        )

    def _prepare(self, model: Any) -> None:
        hp = self.hparams
        freeze = hp.freeze_feature_encoder
        if freeze is None:  # the recipe's default: a pretrained waveform encoder stays as it is
            freeze = hp.model_name_or_path is not None and model.main_input_name == WAVEFORM_INPUT
        if freeze and freeze_front_end(model) is None:
            raise ConfigError(
                f"{type(model).__name__} has no convolutional front end to freeze (neither a "
                "waveform feature encoder nor subsampling convolutions); set "
                "freeze_feature_encoder to null or false"
            )
        if hp.gradient_checkpointing:
            if not model.supports_gradient_checkpointing:
                raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing")
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable({"use_reentrant": False})

    def _require_model(self) -> Any:
        if self.model is None:
            self.configure_model()
        return self.model

    @property
    def blank_id(self) -> int:
        """The CTC blank id (``config.pad_token_id``, OmniASR's ``blank_token_id``)."""
        return blank_token_id(self._require_model().config)

    # -- forward, loss, decoding ----------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, V)`` and true output lengths ``(B,)`` of a collated batch.

        Outside training, a family whose padding changes valid frames
        (:func:`asr_lightning.model.families.padding_exact`) runs each row alone.
        """
        model = self._require_model()
        inputs, mask = batch[model.main_input_name], batch["attention_mask"]
        if self.training or len(inputs) < 2 or padding_exact(model.config.model_type):
            logits = model(**model_inputs(model, inputs, mask)).logits  # (B, T, V)
        else:
            logits = _each_row_alone(model, inputs, mask)
        lengths = output_lengths(model, batch).clamp(max=logits.shape[1])
        return logits, lengths

    def _loss(self, logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        return ctc_loss(
            logits,
            lengths,
            labels,
            blank_id=self.blank_id,
            reduction=self.hparams.ctc_loss_reduction,
            zero_infinity=self.hparams.ctc_zero_infinity,
        )

    def transcribe(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Transcripts of a batch of logits, each cut at its true length, decoded with
        ``decoding`` exactly as the ``Transcriber`` decodes them."""
        self._require_model()
        return self.decoder.texts(logits, lengths)

    # -- steps ------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Give the loggers the hyperparameters (the vocabulary as its size and tokens)."""
        if self._trainer is None:
            return
        params = loggable_hyperparameters(self.hparams)
        for logger in self.trainer.loggers:
            logger.log_hyperparams(params)

    def on_fit_start(self) -> None:
        """Train mode for the Hugging Face model, and warnings about this run's settings.

        ``from_pretrained`` returns a model in eval mode and Lightning keeps every submodule's
        mode, so without this a fine-tune would run with dropout, LayerDrop and SpecAugment off
        (Lightning restores the mode after each validation).
        """
        model = self._require_model()
        model.train()
        self._check_ddp_layerdrop(model.config)
        for message in (
            padding_warning(model.config.model_type),
            bf16_warning(self.trainer.precision, hidden_size(model.config))
            if self.device.type == "cpu"
            else None,
        ):
            if message:
                rank_zero_warn(message)

    def _check_ddp_layerdrop(self, config: Any) -> None:
        """LayerDrop skips layers at random, differently on each process (their random streams
        part after the first batches of different lengths); DDP, unless told to look for unused
        parameters, then waits for gradients that never come: an error, or a hang mid-epoch."""
        probability = layerdrop(config)
        wrapped = getattr(self.trainer.strategy, "model", None)
        if (
            probability > 0
            and self.trainer.world_size > 1
            and isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
            and not wrapped.find_unused_parameters
        ):
            raise ConfigError(
                f"layerdrop={probability:g} skips encoder layers at random, differently on each "
                f"of the {self.trainer.world_size} DDP processes, and DDP without "
                "find_unused_parameters then fails or hangs mid-training: set --model.layerdrop "
                "0.0 (as configs/*.yaml do), or --trainer.strategy "
                "ddp_find_unused_parameters_true"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._skipped_total += len(batch.get("skipped", ()))
        self.log("data/skipped", float(self._skipped_total), reduce_fx="sum", sync_dist=True)
        if len(batch["ids"]) == 0:
            log.warning(
                "every item of training batch %s was skipped: %s", batch_idx, batch["skipped"]
            )
            if self.trainer.world_size > 1:  # every rank must reach backward together
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return None
        logits, lengths = self(batch)
        loss = self._loss(logits, lengths, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def _evaluate(self, stage: Stage, batch: dict[str, Any], index: int) -> list[str]:
        """Loss, transcripts and error-rate updates of one batch of evaluation set ``index``."""
        unreadable = self._unreadable_rows(stage, batch, index)
        if len(batch["ids"]) == 0:
            if stage in self.error_rates:
                self.error_rates[stage].update(index, [], [], self.device)
            hypotheses, references, confidences = [], [], []
        else:
            logits, lengths = self(batch)
            decoded = self.decoder.decode_batch(logits, lengths)
            hypotheses = [d.text for d in decoded]
            confidences = [d.confidence for d in decoded]
            references = batch.get("texts") or [""] * len(hypotheses)  # unlabelled predict data
            if stage != "predict":
                loss = self._loss(logits, lengths, batch["labels"])
                name, num_sets = set_name(index, self._set_names(stage)), self._num_sets(stage)
                for key in metric_keys(stage, "loss", name, index, num_sets):
                    self.log(
                        key, loss, batch_size=len(hypotheses), add_dataloader_idx=False,
                        sync_dist=True,
                    )  # fmt: skip
                self._empty_counts[0] += sum(not h.strip() for h in hypotheses)
                self._empty_counts[1] += len(hypotheses)
        scored = [*zip(batch["ids"], references, hypotheses, strict=True)]
        if self.hparams.unreadable == "score":
            scored += [(uid, ref, "") for uid, ref, _ in unreadable]
        if stage in self.error_rates and scored:
            self.error_rates[stage].update(
                index, [hyp for *_, hyp in scored], [ref for _, ref, _ in scored], self.device
            )
        if stage in self._records:
            self._keep_records(stage, index, batch, references, hypotheses, confidences)
        return hypotheses

    def _keep_records(
        self,
        stage: Stage,
        index: int,
        batch: dict[str, Any],
        references: list[str],
        hypotheses: list[str],
        confidences: list[float | None],
    ) -> None:
        """Remember one per-utterance record per utterance of the batch, unreadable ones too:
        transcripts, confidence, error counts, and the batch's ``details`` (duration, speaker,
        audio file) for the evaluation report."""
        records = self._records[stage].setdefault(index, [])
        details = batch.get("details") or [{}] * len(hypotheses)
        rows = zip(batch["ids"], references, hypotheses, confidences, details, strict=True)
        for uid, ref, hyp, confidence, detail in rows:
            record = {"id": uid, "hypothesis": hyp, "confidence": confidence}
            if stage == "test" or ref:
                record |= {"reference": ref, **utterance_errors(ref, hyp)}
            records.append(record | detail)
        skipped = batch.get("skipped") or []
        texts = batch.get("skipped_texts") or [""] * len(skipped)
        skipped_details = batch.get("skipped_details") or [{}] * len(skipped)
        for (uid, reason), ref, detail in zip(skipped, texts, skipped_details, strict=True):
            record = {"id": uid, "hypothesis": "", "confidence": None, "unreadable": reason}
            if (stage == "test" or ref) and self.hparams.unreadable == "score":
                record |= {"reference": ref, **utterance_errors(ref, "")}
            elif stage == "test" or ref:
                record["reference"] = ref
            records.append(record | detail)

    def _unreadable_rows(
        self, stage: Stage, batch: dict[str, Any], index: int
    ) -> list[tuple[str, str, str]]:
        """``(id, reference, reason)`` of the batch's utterances whose audio could not be read,
        remembered for the stage's count and its list at the end."""
        skipped = batch.get("skipped") or []
        texts = batch.get("skipped_texts") or [""] * len(skipped)
        rows = [(uid, text, reason) for (uid, reason), text in zip(skipped, texts, strict=True)]
        if stage in self._unreadable:
            self._unreadable[stage].setdefault(index, []).extend(
                (uid, reason) for uid, _, reason in rows
            )
        return rows

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._evaluate("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._evaluate("test", batch, dataloader_idx)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, str]]:
        """``[{"id", "hypothesis"}]`` for each utterance of the batch."""
        hypotheses = self._evaluate("predict", batch, dataloader_idx)
        return [
            {"id": uid, "hypothesis": hyp}
            for uid, hyp in zip(batch["ids"], hypotheses, strict=True)
        ]

    # -- epoch ends: metrics, blank-only watch, per-utterance reports -----------------------

    def _set_names(self, stage: Stage) -> list[str] | None:
        """Names of the stage's sets from the datamodule's ``<stage>_set_names``, if it has one."""
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, f"{stage}_set_names", None)

    def _num_sets(self, stage: Stage) -> int:
        trainer = self.trainer
        if stage == "val":
            batches = (
                trainer.num_sanity_val_batches
                if trainer.sanity_checking
                else trainer.num_val_batches
            )
        else:
            batches = trainer.num_test_batches if stage == "test" else trainer.num_predict_batches
        return len(batches)

    def _log_error_rates(self, stage: Stage) -> None:
        names, num_sets = self._set_names(stage), self._num_sets(stage)
        for index, rates in self.error_rates[stage].compute().items():
            name = set_name(index, names)
            for metric, value in rates.items():
                for key in metric_keys(stage, metric, name, index, num_sets):
                    self.log(key, value, prog_bar=key.endswith("/wer"), sync_dist=True)

    def _report_unreadable(self, stage: Stage) -> None:
        """Log ``<stage>/unreadable`` per set (every rank's count), and list them after test."""
        names, num_sets = self._set_names(stage), self._num_sets(stage)
        found, self._unreadable[stage] = self._unreadable[stage], {}
        for index in range(num_sets):
            rows = gather_records([{"id": u, "reason": r} for u, r in found.get(index, [])])
            name = set_name(index, names)
            for key in metric_keys(stage, "unreadable", name, index, num_sets):
                self.log(key, float(len(rows)), add_dataloader_idx=False)
            if rows and stage == "test":
                listed = "\n".join(f"  {row['id']}: {row['reason']}" for row in rows)
                how = (
                    "scored as empty transcripts"
                    if self.hparams.unreadable == "score"
                    else "left out of the error rates (model.unreadable: exclude)"
                )
                rank_zero_warn(
                    f"test set {name}: {len(rows)} utterance(s) could not be read, {how}:\n{listed}"
                )

    def on_validation_epoch_start(self) -> None:
        self._empty_counts = [0, 0]
        self._unreadable["val"] = {}

    def on_validation_epoch_end(self) -> None:
        self._log_error_rates("val")
        self._report_unreadable("val")
        if self.trainer.sanity_checking:
            return
        empty, total = self._empty_counts
        self._blank_only_evaluations = (
            self._blank_only_evaluations + 1 if total and empty == total else 0
        )
        if self._blank_only_evaluations >= self.hparams.blank_warning_patience:
            rank_zero_warn(BLANK_ONLY_WARNING % self._blank_only_evaluations)

    def on_test_epoch_start(self) -> None:
        self._records["test"] = {}
        self._unreadable["test"] = {}

    def on_test_epoch_end(self) -> None:
        self._log_error_rates("test")
        self._report_unreadable("test")
        self._write_records("test")

    def on_predict_epoch_start(self) -> None:
        self._records["predict"] = {}

    def on_predict_epoch_end(self) -> None:
        self._write_records("predict")

    def _write_records(self, stage: Stage) -> None:
        """Write every rank's records to ``<run folder>/predictions/<stage>_<set>.jsonl`` and,
        after test, the evaluation report of the sets with scored utterances next to them
        (``predictions/report.html``)."""
        log_dir = run_dir(self.trainer)  # call on all ranks
        names = self._set_names(stage)
        scored = []
        for index in range(self._num_sets(stage)):
            records = gather_records(self._records[stage].get(index, []))
            if self.trainer.is_global_zero:
                path = log_dir / "predictions" / f"{stage}_{set_name(index, names)}.jsonl"
                write_jsonl(path, records)
                log.info("wrote %s transcripts to %s", len(records), path)
                if any("word_errors" in record for record in records):
                    scored.append(path)
        self._records[stage] = {}
        if stage == "test" and scored:
            from asr_lightning.report.build import write_report  # matplotlib: for test only

            write_report(scored, log_dir / "predictions" / REPORT_FILE)

    # -- optimisation -----------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        model = self._require_model()
        groups = parameter_groups(model, hp.learning_rate, hp.head_learning_rate, hp.weight_decay)
        optimizer = torch.optim.AdamW(
            groups,
            lr=hp.learning_rate,
            betas=hp.adam_betas,
            eps=hp.adam_epsilon,
            fused=(_fused_adamw_supported(groups) and self._clipping_allows_fused()) or None,
        )
        total = self.trainer.estimated_stepping_batches
        if hp.schedule_horizon == "budget":
            scheduler = build_budget_scheduler(
                optimizer, hp.scheduler, hp.warmup_ratio, self._budget_clock(total)
            )
        else:
            scheduler = build_scheduler(optimizer, hp.scheduler, hp.warmup_ratio, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _budget_clock(self, total_steps: float) -> Callable[[], float]:
        """The fraction of the run's budget spent, read from Lightning's ``max_time`` Timer
        (which restores its elapsed time on resume) and the global step. Every process gets
        rank 0's value, as the Timer broadcasts its stop decision, so DDP ranks keep one
        learning rate."""
        from lightning.pytorch.callbacks import Timer

        trainer = self.trainer
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        limit = None
        if timer is not None and timer.time_remaining() is not None:
            limit = timer.time_elapsed() + timer.time_remaining()
        budget_progress(0, total_steps, 0.0, limit)  # a ConfigError now if nothing bounds it

        def progress() -> float:
            elapsed = timer.time_elapsed() if timer is not None else 0.0
            fraction = budget_progress(trainer.global_step, total_steps, elapsed, limit)
            if timer is not None and timer.start_time() is not None:  # training: all ranks
                fraction = trainer.strategy.broadcast(fraction)
            return fraction

        return progress

    def _clipping_allows_fused(self) -> bool:
        """Lightning refuses to clip the gradients of a fused optimizer under mixed precision
        (``16-mixed``, ``bf16-mixed``: it expects a fused optimizer to unscale them in its own
        step), so clipped mixed-precision runs keep the unfused AdamW."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        trainer = self._trainer
        if trainer is None or not (trainer.gradient_clip_val or 0) > 0:
            return True
        return not isinstance(trainer.precision_plugin, MixedPrecision)

    # -- state beyond the weights -----------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["asr_lightning"] = {
            "skipped_total": self._skipped_total,
            "blank_only_evaluations": self._blank_only_evaluations,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_checkpoint_shapes(checkpoint.get("state_dict", {}))
        state = checkpoint.get("asr_lightning", {})
        self._skipped_total = state.get("skipped_total", 0)
        self._blank_only_evaluations = state.get("blank_only_evaluations", 0)

    def _check_checkpoint_shapes(self, weights: dict[str, Any]) -> None:
        """A checkpoint of another vocabulary or architecture than the config builds is a
        ConfigError naming both, not a ``load_state_dict`` size-mismatch traceback."""
        own = self.state_dict()
        mismatched = [
            f"{name} {tuple(tensor.shape)} in the checkpoint, {tuple(own[name].shape)} here"
            for name, tensor in weights.items()
            if name in own and hasattr(tensor, "shape") and tensor.shape != own[name].shape
        ]
        if not mismatched:
            return
        trainer = self._trainer
        source = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        raise ConfigError(
            f"checkpoint {source or '(given)'} does not fit the model this config builds: "
            f"{'; '.join(mismatched[:3])}. A different "
            "vocabulary (data.vocab_type, data.vocab_size, the training manifest) or "
            "model.config_overrides changes these shapes: pass the fit's own config "
            "(<run folder>/config.yaml, e.g. --config runs/NAME/version_N/config.yaml)"
        )

    def save_hf(self, directory: str | Path) -> Path:
        """Save model (safetensors), feature extractor, tokenizer and decoding (with its LM) as
        a Hugging Face folder.

        ``AutoModelForCTC.from_pretrained(directory)``,
        ``pipeline("automatic-speech-recognition", model=directory)`` and
        ``CTCModule(model_name_or_path=directory)`` load it. Under DDP only rank 0 writes.

        Args:
            directory: folder to write (created if missing).
        """
        model = self._require_model()
        path = Path(directory)
        if self._trainer is not None and not self.trainer.is_global_zero:
            return path
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        self.feature_extractor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        save_decoding(self.decoding, path)  # the LM travels with the model
        log.info("saved the model, feature extractor and tokenizer to %s", path)
        return path


def _fused_adamw_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused AdamW kernel takes every parameter of ``groups``.

    Fused runs one kernel over all parameters; on a CPU the default instead loops over them
    tensor by tensor: one AdamW step of the 2.2 M-parameter AN4 Parakeet (158 tensors) took
    3.6 ms fused against 40 ms (benchmarks/train_speed.py, BENCHMARKS.md). ``transformers``
    ``Trainer`` defaults to the fused kernel too (``adamw_torch_fused``, torch >= 2.8).
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch without the list: the devices every torch >= 2.4 fuses on
        devices = {"cpu", "cuda"}
    return all(
        param.device.type in devices and param.is_floating_point()
        for group in groups
        for param in group["params"]
    )


def _each_row_alone(model: Any, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, T, V)`` of a padded batch computed row by row, each at its own length."""
    time = inputs.dim() - 1 if model.main_input_name == WAVEFORM_INPUT else 1  # (B, [1,] T)
    rows = []
    for row in range(len(inputs)):
        valid = int(mask[row].sum())
        alone = inputs[row : row + 1].narrow(time, 0, valid)
        kwargs = model_inputs(model, alone, mask[row : row + 1, :valid])
        rows.append(model(**kwargs).logits[0])  # (T_i, V)
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)

"""The LightningDataModule: wires sources, durations, filters, text and batching together.

Everything it does is a call into the pure modules next to it; it only decides which split gets
which treatment (augmentation and shuffling for training only) and reports what it dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Sampler

from asr_lightning.audio.augment import AugmentConfig, Augmenter
from asr_lightning.audio.decode import DEFAULT_BACKENDS, SAMPLE_RATE, Backend
from asr_lightning.data.bucketing import DurationBucketSampler
from asr_lightning.data.collate import CTCCollator
from asr_lightning.data.dataset import ASRDataset
from asr_lightning.data.durations import DEFAULT_CACHE_PATH
from asr_lightning.data.filters import FilterReport, FilterRules
from asr_lightning.data.pipeline import (
    ChunkJob,
    default_workers,
    join,
    manifest_spans_to_split,
    prepare_rows,
    prepare_spans,
    prepare_table,
    raw_texts,
    read_spans,
)
from asr_lightning.data.sources import (
    SourceConfig,
    Utterance,
    iter_source,
    parse_spec,
)
from asr_lightning.data.spec_augment import SpecAugmentOptions, check_filter_bank
from asr_lightning.data.streaming import DEFAULT_BUFFER_SIZE, StreamingASRDataset
from asr_lightning.data.table import ItemTable, ItemTableBuilder
from asr_lightning.errors import ConfigError, VocabularyError
from asr_lightning.model.factory import (
    build_processor,
    checkpoint_tokenizer,
    output_frames_per_second,
)
from asr_lightning.model.features import collator
from asr_lightning.text.normalize import TextNormalizer
from asr_lightning.text.subword import make_subword_tokenizer, train_subword
from asr_lightning.text.vocab import LabelEncoder, build_vocab, vocab_characters

log = logging.getLogger(__name__)

SourceSpec = str | SourceConfig
AnyDataset = ASRDataset | StreamingASRDataset
#: Above this share of training transcripts dropped as empty after normalization, the text and
#: the vocabulary do not fit together (wrong script, case or tokenizer) and training would only
#: learn to emit blanks: stop before it starts.
MAX_EMPTY_TRANSCRIPT_FRACTION = 0.5
#: Characters shown when explaining that the vocabulary does not fit.
OOV_SHOWN = 20


class EpochTaggedSampler(Sampler[list[tuple[int, int]]]):
    """Yields ``(index, epoch)`` pairs so the dataset can seed augmentation per epoch.

    ``sampler`` is the wrapped bucket sampler: Lightning calls ``batch_sampler.sampler.set_epoch``
    at the start of every epoch, including after a resume.
    """

    def __init__(self, sampler: DurationBucketSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(index, epoch) for index in batch]

    def __len__(self) -> int:
        # A whole epoch, even when resuming mid-epoch: Lightning counts the resumed epoch's
        # batches from the checkpoint's position (batch_progress.current.ready), so it ends the
        # epoch, and sizes the LR schedule (estimated_stepping_batches), by this length.
        return self.sampler.batches_per_epoch


class _EpochLoader(DataLoader):
    """A DataLoader that tells its (streaming) dataset the epoch before each pass."""

    def __init__(self, dataset: StreamingASRDataset, epoch: Callable[[], int], **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self._epoch = epoch

    def __iter__(self):  # type: ignore[override]
        self.dataset.set_epoch(self._epoch())
        return super().__iter__()


class ASRDataModule(pl.LightningDataModule):
    """Speech + transcripts in, padded CTC batches out.

    Args:
        train: Training source: a manifest (``.jsonl``), CSV/TSV, Common Voice release folder
            (``DIR`` or ``DIR#train``), ``datasets.save_to_disk`` folder, or ``hf:owner/name``.
        validation: Validation source, or a mapping of name to source for several sets.
        test: Test source, or a mapping of name to source for several sets.
        predict: Source to transcribe with ``predict``.
        processor: Pretrained processor (hub id or local folder) whose tokenizer and feature
            extractor are used; linked from the model's ``model_name_or_path``.
        model_type: Architecture of a model trained from scratch (``wav2vec2``, ``parakeet_ctc``),
            which picks the feature extractor; linked from the model.
        model_config_overrides: The model's architecture overrides (they can change the feature
            extractor, e.g. Parakeet's ``num_mel_bins``); linked from the model.
        vocab_from_data: Build the vocabulary from the training transcripts even when the
            pretrained checkpoint has a tokenizer, and train a new CTC head for it (e.g. an
            English checkpoint fine-tuned to another language). A checkpoint without a tokenizer
            (wav2vec2-base, XLS-R, HuBERT, WavLM, w2v-BERT 2.0) always gets one built from data.
        vocab_type: Labels of a vocabulary built from data: ``char`` (one per character, ``|``
            between words), or subword pieces trained on the normalized training transcripts
            (never validation or test): ``bpe`` or ``unigram`` (SentencePiece), saved with the
            model as a ``tokenizer.json``. Needs ``vocab_size``.
        vocab_size: Ids of a ``bpe`` or ``unigram`` vocabulary, ``<pad>`` and ``<unk>``
            included; too large or too small a size for the transcripts stops with the range
            that works.
        text_case: Case of the normalized text; ``auto`` follows the vocabulary's letters.
        drop_characters: Characters removed from transcripts before tokenization; ``None`` keeps
            the normalizer's default set of punctuation.
        min_duration_s: Utterances shorter than this are dropped (and counted).
        max_duration_s: Utterances longer than this are dropped (and counted).
        max_batch_seconds: Cap on padded seconds of audio per training batch (bucketed batching).
        batch_size: Fixed utterances per batch within duration buckets, instead of a seconds cap.
        eval_max_batch_seconds: Seconds cap for evaluation batches; defaults to
            ``max_batch_seconds``.
        num_buckets: Number of duration buckets.
        num_workers: DataLoader worker processes.
        cache_audio: Decode every file of every (non-streaming) split once at setup and keep the
            samples in memory (float32, about 230 MB per hour of audio, shared with the forked
            workers), instead of decoding each file again every epoch.
        augment: Training-only waveform augmentation; ``None`` disables it.
        spec_augment: Training-only SpecAugment time and frequency masks on the features of
            filter-bank models (Parakeet, LASR, w2v-BERT); ``{}`` for NeMo's Conformer-CTC
            defaults, ``None`` (the default) disables it. wav2vec2-family models mask inside
            the model instead (``model.mask_time_prob``).
        level: Level normalization applied to every split (AN4 audio is quiet).
        decode_backends: Audio decoders tried in this order.
        duration_cache: SQLite file caching measured durations (shared with ``data check
            --duration-cache``); ``None`` disables the cache.
        stream_buffer_size: Utterances of a ``streaming`` source sorted together into batches.
        setup_workers: Processes that set up a large source (a JSON-lines manifest over 16 MB,
            or over 131,072 rows read for the vocabulary), each a chunk of rows at a time;
            ``None``: the CPUs of this machine shared by its training processes; 1: this
            process only. Small sources are always set up in this process.
        seed: Seed of batching order and augmentation.
    """

    def __init__(
        self,
        train: SourceSpec | None = None,
        validation: SourceSpec | dict[str, SourceSpec] | None = None,
        test: SourceSpec | dict[str, SourceSpec] | None = None,
        predict: SourceSpec | None = None,
        processor: str | None = None,
        model_type: str | None = None,
        model_config_overrides: dict[str, Any] | None = None,
        vocab_from_data: bool = False,
        vocab_type: Literal["char", "bpe", "unigram"] = "char",
        vocab_size: int | None = None,
        text_case: Literal["auto", "upper", "lower", "keep"] = "auto",
        drop_characters: str | None = None,
        min_duration_s: float = 1.0,
        max_duration_s: float = 18.0,
        max_batch_seconds: float | None = 200.0,
        batch_size: int | None = None,
        eval_max_batch_seconds: float | None = None,
        num_buckets: int = 8,
        num_workers: int = 2,
        cache_audio: bool = False,
        augment: AugmentConfig | None = None,
        spec_augment: SpecAugmentOptions | None = None,
        level: Literal["none", "peak", "rms"] = "none",
        decode_backends: Sequence[Backend] = DEFAULT_BACKENDS,
        duration_cache: str | None = DEFAULT_CACHE_PATH,
        stream_buffer_size: int = DEFAULT_BUFFER_SIZE,
        setup_workers: int | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if (max_batch_seconds is None) == (batch_size is None):
            raise ConfigError("set exactly one of data.max_batch_seconds or data.batch_size")
        self.sources: dict[str, dict[str, SourceSpec]] = {
            "train": _named(train, "train"),
            "validation": _named(validation, "validation"),
            "test": _named(test, "test"),
            "predict": _named(predict, "predict"),
        }
        self.processor_name = processor
        self.model_type = model_type
        self.model_config_overrides = model_config_overrides
        self.vocab_from_data = vocab_from_data
        if (vocab_type == "char") != (vocab_size is None):
            raise ConfigError(
                f"data.vocab_size goes with data.vocab_type bpe or unigram, got vocab_type "
                f"{vocab_type} and vocab_size {vocab_size}: "
                + (
                    "remove vocab_size, or set vocab_type: bpe"
                    if vocab_type == "char"
                    else "set vocab_size, e.g. 256 (see the README on picking it)"
                )
            )
        self.vocab_type = vocab_type
        self.vocab_size = vocab_size
        self._tokenizer_json: str | None = None  # the subword tokenizer built with the vocab
        self.text_case = text_case
        self.drop_characters = drop_characters
        self.rules = FilterRules(min_duration_s=min_duration_s, max_duration_s=max_duration_s)
        self.max_batch_seconds = max_batch_seconds
        self.batch_size = batch_size
        self.eval_max_batch_seconds = eval_max_batch_seconds or max_batch_seconds
        self.num_buckets = num_buckets
        self.num_workers = num_workers
        self.cache_audio = cache_audio
        self.augment = augment
        self.spec_augment = spec_augment
        self.level = level
        self.decode_backends = tuple(decode_backends)
        self.duration_cache = duration_cache
        self.stream_buffer_size = stream_buffer_size
        if setup_workers is not None and setup_workers < 1:
            raise ConfigError(
                f"data.setup_workers must be 1 or more (or null), got {setup_workers}"
            )
        self.setup_workers = setup_workers
        self.seed = seed
        self.datasets: dict[str, dict[str, ASRDataset]] = {}
        self.reports: dict[str, FilterReport] = {}
        self._processor: tuple[Any, Any] | None = None
        self._vocab: dict[str, int] | None = None
        self._vocab_is_built = False  # from the training transcripts (not the checkpoint's)
        self._train_rows: dict[str, ItemTable] = {}  # read to build the vocabulary, kept once
        self._frames_per_second: float | None = None
        self._train_sampler: DurationBucketSampler | None = None
        self._pending_sampler_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- text side
    @property
    def vocab(self) -> dict[str, int]:
        """The label vocabulary: the pretrained tokenizer's, or built from training transcripts
        (from scratch, for a checkpoint without a tokenizer, or with ``vocab_from_data``)."""
        if self._vocab is None:
            if self.processor_name is not None and not self.vocab_from_data:
                tokenizer, reason = checkpoint_tokenizer(self.processor_name)
                if tokenizer is not None:
                    if self.vocab_type != "char":
                        raise ConfigError(
                            f"data.vocab_type {self.vocab_type} trains a vocabulary from the "
                            f"transcripts, but {self.processor_name} has its own tokenizer: "
                            "set data.vocab_from_data: true to replace it (and the CTC head), "
                            "or remove data.vocab_type and data.vocab_size to keep it"
                        )
                    self._vocab = dict(tokenizer.get_vocab())
                    return self._vocab
                log.info(
                    "%s has no tokenizer (%s): building the vocabulary from the training "
                    "transcripts, with a new CTC head",
                    self.processor_name,
                    reason.splitlines()[0] if reason else "none saved",
                )
            self._vocab = self._build_vocab_from_train()
            self._vocab_is_built = True
        return self._vocab

    def _build_vocab_from_train(self) -> dict[str, int]:
        if not self.sources["train"]:
            why = (
                "a model trained from scratch"
                if self.processor_name is None
                else f"fine-tuning {self.processor_name}, which has no tokenizer"
                if not self.vocab_from_data
                else "data.vocab_from_data"
            )
            raise ConfigError(
                f"{why} needs data.train to build the vocabulary from its transcripts; set "
                "data.train (the same as in fit), or give model.model_name_or_path a model "
                "folder that has a tokenizer (e.g. the hf_model folder fit writes)"
            )
        normalizer = TextNormalizer(case=self._scratch_case(), **self._drop_kwargs())
        characters: set[str] = set()
        read = 0
        for name, spec in self.sources["train"].items():
            config = parse_spec(spec)
            if config.streaming:  # one pass, no list of a million transcripts
                texts = (utt.text for utt in iter_source(config))
                characters |= normalizer.characters(texts)
                continue
            # the rows are kept in columns, so that setup does not parse the source again
            workers = self._setup_workers()
            spans = manifest_spans_to_split(config, workers)
            if spans is not None:
                rows = read_spans(normalizer, config, spans, workers)
                self._train_rows[name], found = rows.table, rows.characters
            else:
                builder = ItemTableBuilder()
                found = normalizer.characters(raw_texts(iter_source(config), builder))
                self._train_rows[name] = builder.finish()
            characters |= found
            read += len(self._train_rows[name])
        vocab = build_vocab(["".join(sorted(characters))])
        log.info("built a %d-symbol vocabulary from %d training transcripts", len(vocab), read)
        if self.vocab_type != "char":
            return self._train_subword(vocab)
        return vocab

    @property
    def tokenizer_json(self) -> str | None:
        """The subword tokenizer (``tokenizers`` JSON) of :attr:`vocab`; ``None`` for
        characters and for a checkpoint's own tokenizer. Linked to ``model.tokenizer_json``."""
        self.vocab  # noqa: B018 (decides whether there is one)
        return self._tokenizer_json

    def _train_subword(self, characters: dict[str, int]) -> dict[str, int]:
        """Train the subword vocabulary on the training transcripts, normalized to
        ``characters`` (the character vocabulary of the same transcripts) as labels will be."""
        normalizer = TextNormalizer.from_vocab(
            characters, case=self.text_case, **self._drop_kwargs()
        )
        texts = (normalizer(text) for text in self._train_texts())
        self._tokenizer_json = train_subword(texts, self.vocab_type, self.vocab_size)
        tokenizer = make_subword_tokenizer(self._tokenizer_json)
        spelled = vocab_characters(tokenizer.get_vocab(), None, tokenizer.all_special_tokens)
        if spelled != normalizer.vocabulary:  # the labels' normalizer must keep every character
            raise VocabularyError(
                f"the {self.vocab_type} vocabulary lacks characters of the training transcripts "
                f"({''.join(sorted(normalizer.vocabulary - spelled))!r}); report this as a bug"
            )
        return dict(tokenizer.get_vocab())

    def _train_texts(self) -> Iterator[str]:
        """The raw transcripts of every training source: the rows kept for setup, or a new
        pass over a streaming one."""
        for name, spec in self.sources["train"].items():
            if name in self._train_rows:
                texts = self._train_rows[name].texts
                yield from (str(texts[index]) for index in range(len(texts)))
            else:
                yield from (utt.text for utt in iter_source(parse_spec(spec)))

    def _setup_workers(self) -> int:
        """Processes setting up a large source: ``setup_workers``, or the CPUs of this machine
        shared by the training processes on it."""
        if self.setup_workers is not None:
            return self.setup_workers
        trainer = getattr(self, "trainer", None)
        return default_workers(getattr(trainer, "num_devices", 1) if trainer else 1)

    def _scratch_case(self) -> Literal["upper", "lower", "keep"]:
        return "keep" if self.text_case == "auto" else self.text_case

    def _drop_kwargs(self) -> dict[str, str]:
        return {} if self.drop_characters is None else {"drop_characters": self.drop_characters}

    @property
    def processor(self) -> tuple[Any, Any]:
        """``(feature_extractor, tokenizer)`` used to collate inputs and encode labels."""
        if self._processor is None:
            if self.processor_name is None:
                self._processor = build_processor(
                    None,
                    self.model_type,
                    self.vocab,
                    self.model_config_overrides,
                    self._tokenizer_json,
                )
            else:
                vocab = self.vocab  # decides between the checkpoint's tokenizer and the data's
                built = vocab if self._vocab_is_built else None
                self._processor = build_processor(
                    self.processor_name, None, built, tokenizer_json=self._tokenizer_json
                )
        return self._processor

    @property
    def feature_extractor(self) -> Any:
        return self.processor[0]

    @property
    def tokenizer(self) -> Any:
        return self.processor[1]

    def normalizer(self) -> TextNormalizer:
        case = self.text_case
        return TextNormalizer.from_vocab(self.vocab, case=case, **self._drop_kwargs())

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        wanted = {
            "fit": ("train", "validation"),
            "validate": ("validation",),
            "test": ("test",),
            "predict": ("predict",),
        }.get(stage or "fit", ("train", "validation", "test", "predict"))
        if self.spec_augment is not None and "train" in wanted:  # before any set is read
            check_filter_bank(self.feature_extractor.model_input_names[0])
        for split in wanted:
            if split in self.datasets or not self.sources[split]:
                continue
            self.datasets[split] = {
                name: self._dataset(split, name, spec) for name, spec in self.sources[split].items()
            }

    def _dataset(self, split: str, name: str, spec: SourceSpec) -> AnyDataset:
        """Reads, measures and filters one source (or prepares its stream)."""
        encoder = LabelEncoder(self.tokenizer)
        normalizer = self.normalizer()
        rules = self._rules_for_model()
        if split != "train":
            rules = _eval_rules(rules)
        augmenter = (
            Augmenter(self.augment, seed=self.seed) if split == "train" and self.augment else None
        )
        config = parse_spec(spec)
        if config.streaming:
            replicas, rank = self._world()
            return StreamingASRDataset(
                config,
                normalizer,
                encoder,
                rules,
                max_batch_seconds=self.max_batch_seconds
                if split == "train"
                else self.eval_max_batch_seconds,
                batch_size=self.batch_size,
                buffer_size=self.stream_buffer_size,
                shuffle=split == "train",
                augmenter=augmenter,
                level=self.level,
                backends=self.decode_backends,
                seed=self.seed,
                num_replicas=replicas,
                rank=rank,
            )
        job = ChunkJob(
            rules,
            normalizer,
            encoder.count,
            self.duration_cache,
            keep_unreadable=split != "train",  # scores cover the whole set: scored as empty
        )
        workers = self._setup_workers()
        read_before = self._train_rows.pop(name, None) if split == "train" else None
        if read_before is not None:  # read for the vocabulary
            parts = prepare_table(job, read_before, workers)
            del read_before  # its memory goes to the kept rows
        elif (spans := manifest_spans_to_split(config, workers)) is not None:
            parts = prepare_spans(job, config, spans, workers)
        else:  # in chunks: a million rows never exist as a million Python objects at once
            parts = prepare_rows(job, iter_source(config))
        prepared = join(parts)
        del parts
        report = prepared.report
        self.reports[f"{split}/{name}"] = report
        log.info("%s/%s: %s", split, name, report.summary())
        if split == "train":
            _check_transcripts_fit(report, prepared.sample, config.path, normalizer)
        items = prepared.table
        if len(prepared.unreadable):
            _warn_unreadable(prepared.unreadable, f"{split}/{name}")
            items = ItemTable.concat([items, prepared.unreadable])
        return ASRDataset(
            items,
            encoder,
            sample_rate=SAMPLE_RATE,
            backends=self.decode_backends,
            augmenter=augmenter,
            level=self.level,
            seed=self.seed,
            cache_audio=self.cache_audio,
        )

    @property
    def output_frames_per_second(self) -> float | None:
        """The model's CTC output frames per second, from the model settings linked to the data
        module (``processor``, ``model_type``, ``model_config_overrides``), with or without a
        Trainer; ``None`` when no model is named."""
        if self._frames_per_second is None and (self.processor_name or self.model_type):
            self._frames_per_second = output_frames_per_second(
                self.processor_name,
                self.model_type,
                self.model_config_overrides,
                self.feature_extractor,
            )
        return self._frames_per_second

    def _rules_for_model(self) -> FilterRules:
        """CTC feasibility needs the model's output frame rate."""
        return FilterRules(
            min_duration_s=self.rules.min_duration_s,
            max_duration_s=self.rules.max_duration_s,
            output_frames_per_second=self.output_frames_per_second,
        )

    # ----------------------------------------------------------------------------- loaders
    def _collator(self, train: bool) -> CTCCollator:
        """The batch collator; only the training split's masks features (``spec_augment``)."""
        return collator(self.feature_extractor, self.spec_augment if train else None)

    def _stream_loader(self, dataset: StreamingASRDataset, train: bool = False) -> DataLoader:
        # workers are re-created every epoch so they see the epoch set by _EpochLoader
        return _EpochLoader(
            dataset,
            epoch=lambda: getattr(getattr(self, "trainer", None), "current_epoch", 0),
            batch_size=None,
            collate_fn=self._collator(train),
            num_workers=self.num_workers,
        )

    def _loader(
        self, dataset: ASRDataset, sampler: DurationBucketSampler, train: bool = False
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=EpochTaggedSampler(sampler),
            collate_fn=self._collator(train),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        dataset = self._only("train")
        if isinstance(dataset, StreamingASRDataset):
            return self._stream_loader(dataset, train=True)
        replicas, rank = self._world()
        sampler = DurationBucketSampler(
            dataset.durations,
            max_batch_seconds=self.max_batch_seconds,
            batch_size=self.batch_size,
            num_buckets=self.num_buckets,
            shuffle=True,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
        )
        if self._pending_sampler_state is not None:
            sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
            log.info(
                "train: resuming epoch %d after %d of its %d batches",
                sampler.epoch,
                sampler.batches_per_epoch - len(sampler),
                sampler.batches_per_epoch,
            )
        self._train_sampler = sampler
        log.info(
            "train: %d batches/epoch/rank, padding %.1f%% of frames",
            sampler.batches_per_epoch,
            100 * sampler.padding_fraction,
        )
        return self._loader(dataset, sampler, train=True)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        replicas, rank = self._world()
        loaders = []
        for dataset in self.datasets.get(split, {}).values():
            if isinstance(dataset, StreamingASRDataset):
                loaders.append(self._stream_loader(dataset))
                continue
            sampler = DurationBucketSampler(
                dataset.durations,
                max_batch_seconds=self.eval_max_batch_seconds,
                batch_size=None if self.eval_max_batch_seconds else self.batch_size,
                num_buckets=self.num_buckets,
                shuffle=False,
                seed=self.seed,
                num_replicas=replicas,
                rank=rank,
            )
            loaders.append(self._loader(dataset, sampler))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("predict")

    @property
    def val_set_names(self) -> list[str]:
        """Validation set names in dataloader order (metrics ``val/<name>/wer``)."""
        return list(self.sources["validation"])

    @property
    def test_set_names(self) -> list[str]:
        """Test set names in dataloader order (metrics ``test/<name>/wer``)."""
        return list(self.sources["test"])

    @property
    def predict_set_names(self) -> list[str]:
        return list(self.sources["predict"])

    def _only(self, split: str) -> AnyDataset:
        sets = self.datasets.get(split, {})
        if not sets:
            raise ConfigError(f"no {split} data: set data.{split} in the config")
        if len(sets) > 1:
            raise ConfigError(f"data.{split} must be a single source, got {sorted(sets)}")
        return next(iter(sets.values()))

    # ----------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Sampler position, so ``fit --ckpt_path last`` resumes mid-epoch where it stopped."""
        trainer = getattr(self, "trainer", None)
        if self._train_sampler is None or trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return {"train_sampler": self._train_sampler.state_dict(batches_done=done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_sampler_state = state_dict.get("train_sampler")


def _named(
    spec: SourceSpec | Mapping[str, SourceSpec] | None, default: str
) -> dict[str, SourceSpec]:
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    return {default: spec}


def _eval_rules(rules: FilterRules) -> FilterRules:
    """Evaluation scores the whole set: any duration, and transcripts CTC could not align
    (they are scored, only training cannot learn from them); unreadable audio is scored as an
    empty transcript (:func:`_unreadable_items`)."""
    return FilterRules(min_duration_s=0.0, max_duration_s=float("inf"))


def _warn_unreadable(unreadable: ItemTable, where: str) -> None:
    """Say once that the set has unreadable items (scored, not dropped)."""
    first = unreadable[0]
    log.warning(
        "%s: %d utterance(s) cannot be read (e.g. %s: %s); they are scored as empty "
        "transcripts unless model.unreadable is exclude",
        where,
        len(unreadable),
        first.id,
        first.unreadable,
    )


def _check_transcripts_fit(
    report: FilterReport, sample: Sequence[Utterance], source: str, normalizer: TextNormalizer
) -> None:
    """Stop when most transcripts are empty once normalized: the vocabulary cannot spell them.

    Args:
        report: The training set's filter report.
        sample: Its first utterances, to show the characters the vocabulary cannot spell.
        source: The training source, named in the error.
        normalizer: The normalizer of the labels.
    """
    total = report.total
    empty = report.dropped.get("empty transcript after normalization", 0)
    if not total or empty / total <= MAX_EMPTY_TRANSCRIPT_FRACTION:
        return
    unknown = sum((normalizer.oov_characters(utt.text) for utt in sample), Counter())
    shown = ", ".join(f"{char!r} ({count})" for char, count in unknown.most_common(OOV_SHOWN))
    spelled = "".join(sorted(normalizer.vocabulary or ()))
    raise VocabularyError(
        f"{empty} of {total} training transcripts in {source} are empty after normalization to "
        f"the vocabulary ({len(spelled)} characters: {spelled[: OOV_SHOWN * 3]!r}); characters "
        f"it cannot spell, most frequent first: {shown or 'none'}; e.g. {sample[0].text!r}. The "
        "transcripts and the tokenizer do not fit (another script or alphabet, digits, or a case "
        "mismatch): set data.vocab_from_data: true to fine-tune this checkpoint with a vocabulary "
        "built from the training transcripts (and a new CTC head), pick a pretrained model whose "
        "vocabulary covers this language, or train from scratch (model.model_name_or_path: null)."
    )

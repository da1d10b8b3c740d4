"""CTC subword vocabularies: train a BPE or unigram tokenizer on the training transcripts.

SentencePiece trains the pieces (one thread, no sampling of sentences, so the same transcripts
always give the same vocabulary); the trained model is then written as a Hugging Face
``tokenizers`` model and wrapped in :class:`transformers.ParakeetTokenizer`, the CTC tokenizer of
SentencePiece vocabularies. Its ``tokenizer.json`` needs neither SentencePiece nor this package
to load: ``AutoTokenizer.from_pretrained``, ``transformers.pipeline``, the ONNX folder and
``serve`` read it as they read Parakeet's own.

The layout matches the character vocabularies of :mod:`asr_lightning.text.vocab`: ``<pad>`` is
id 0 and the CTC blank, ``<unk>`` is 1; then the pieces, word-initial ones spelled with ``▁``
(so words split at ``▁`` pieces in word timestamps and the word LM's beam search).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal

from asr_lightning.errors import ConfigError, VocabularyError
from asr_lightning.text.vocab import PAD_TOKEN, SENTENCEPIECE_SPACE, UNK_TOKEN

if TYPE_CHECKING:
    from transformers import ParakeetTokenizer

logger = logging.getLogger(__name__)

SubwordKind = Literal["bpe", "unigram"]
#: Ids of the CTC blank/padding and of the unknown piece, as in character vocabularies.
PAD_ID, UNK_ID = 0, 1
_TOO_LARGE = re.compile(r"Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"smaller than required_chars\. \d+ vs (\d+)")


def _train_sentencepiece(texts: Iterable[str], kind: SubwordKind, vocab_size: int) -> bytes:
    """The serialized SentencePiece model of ``texts`` (``RuntimeError`` from the trainer)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type=kind,
        vocab_size=vocab_size,
        character_coverage=1.0,  # every character of the transcripts gets a piece
        num_threads=1,  # deterministic: the same transcripts give the same pieces
        pad_id=PAD_ID,
        pad_piece=PAD_TOKEN,
        unk_id=UNK_ID,
        unk_piece=UNK_TOKEN,
        bos_id=-1,  # CTC labels carry no sentence markers
        eos_id=-1,
        normalization_rule_name="identity",  # the transcripts are normalized already
        minloglevel=2,
    )
    return model.getvalue()


def _size_error(err: RuntimeError, kind: SubwordKind, vocab_size: int) -> ConfigError:
    """The trainer's complaint about ``vocab_size`` as an error naming a size that works."""
    message = str(err)
    if match := _TOO_LARGE.search(message):
        return ConfigError(
            f"vocab_size {vocab_size} is too large for a {kind} vocabulary of these training "
            f"transcripts: they give at most {match.group(1)} pieces. Set data.vocab_size to "
            f"{match.group(1)} or less (more transcripts allow more pieces)."
        )
    if match := _TOO_SMALL.search(message):
        least = match.group(1)  # every character (▁ too), <pad> and <unk>
        return ConfigError(
            f"vocab_size {vocab_size} is too small for a {kind} vocabulary of these training "
            f"transcripts: every character needs a piece of its own, which with {PAD_TOKEN} "
            f"and {UNK_TOKEN} takes {least} ids. Set data.vocab_size to {least} or more."
        )
    return ConfigError(f"cannot train a {kind} vocabulary of {vocab_size} pieces: {message}")


def _pieces(model: bytes) -> list[tuple[str, float]]:
    """``(piece, score)`` of each id of a serialized SentencePiece model."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=model)
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(len(processor))]


def _bpe_merges(vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    """The merges of a SentencePiece BPE vocabulary, highest priority first.

    SentencePiece lists its BPE pieces in the order it learned them and merges the pair whose
    result comes first; every split of a piece into two pieces of the vocabulary is a merge
    that makes it, ranked at that piece's place.
    """
    merges: list[tuple[str, str]] = []
    for piece in sorted(vocab, key=vocab.__getitem__):
        if piece in (PAD_TOKEN, UNK_TOKEN):
            continue
        splits = [
            (piece[:cut], piece[cut:])
            for cut in range(1, len(piece))
            if piece[:cut] in vocab and piece[cut:] in vocab
        ]
        merges += sorted(splits, key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
    return merges


def _to_tokenizers_json(pieces: list[tuple[str, float]], kind: SubwordKind) -> str:
    """The ``tokenizer.json`` of a SentencePiece model: same pieces, ids and segmentation."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if kind == "unigram":
        model = models.Unigram(pieces, unk_id=UNK_ID, byte_fallback=False)
    else:
        vocab = {piece: index for index, (piece, _) in enumerate(pieces)}
        model = models.BPE(vocab, _bpe_merges(vocab), unk_token=UNK_TOKEN)
    tokenizer = Tokenizer(model)
    # words begin with ▁, as SentencePiece writes them ("ERASE TWO" -> ▁ERASE ▁TWO)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(SENTENCEPIECE_SPACE, "always")
    tokenizer.decoder = decoders.Metaspace(SENTENCEPIECE_SPACE, "always")
    tokenizer.add_special_tokens([PAD_TOKEN, UNK_TOKEN])
    return tokenizer.to_str()


def train_subword(texts: Iterable[str], kind: SubwordKind, vocab_size: int) -> str:
    """Train a CTC subword tokenizer on the TRAINING transcripts; its ``tokenizer.json``.

    Train it on the training split only, as a character vocabulary is built: pieces learned
    from validation or test transcripts would leak those splits into the model.

    Args:
        texts: normalized transcripts (see :class:`~asr_lightning.text.normalize.TextNormalizer`),
            words separated by single spaces.
        kind: ``bpe`` (merges of frequent pairs) or ``unigram`` (a unigram language model over
            pieces, pruned to size).
        vocab_size: ids of the vocabulary, ``<pad>`` and ``<unk>`` included.

    Returns:
        The tokenizer as ``tokenizers`` JSON: give it to :func:`make_subword_tokenizer`.

    Raises:
        ConfigError: ``vocab_size`` is too small for the transcripts' characters or too large
            for their words; the message names a size that works.
        VocabularyError: there are no transcripts.
    """
    texts = _non_empty(texts)
    try:
        first = next(texts)
    except StopIteration:
        raise VocabularyError(
            "the training transcripts are all empty: there is nothing to train a subword "
            "vocabulary on; check that the training split has non-empty transcripts"
        ) from None
    try:
        model = _train_sentencepiece(_chain(first, texts), kind, vocab_size)
    except RuntimeError as err:
        raise _size_error(err, kind, vocab_size) from err
    pieces = _pieces(model)
    logger.info(
        "trained a %s vocabulary of %d pieces: %s ...",
        kind,
        len(pieces),
        " ".join(piece for piece, _ in pieces[2:22]),
    )
    return _to_tokenizers_json(pieces, kind)


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (text for text in texts if text.strip())


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def make_subword_tokenizer(tokenizer_json: str) -> ParakeetTokenizer:
    """Wrap a trained subword tokenizer in a :class:`transformers.ParakeetTokenizer`.

    ParakeetTokenizer decodes CTC output (it groups repeats and drops the ``<pad>`` blank)
    and saves as ``tokenizer.json`` + ``tokenizer_config.json``, which ``AutoTokenizer`` loads.

    Args:
        tokenizer_json: what :func:`train_subword` returned.
    """
    from tokenizers import Tokenizer
    from transformers import ParakeetTokenizer

    try:
        backend = Tokenizer.from_str(tokenizer_json)
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise VocabularyError(
            f"not a tokenizers JSON model ({err}); pass what train_subword() returned"
        ) from err
    tokenizer = ParakeetTokenizer(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,  # "a ' b" stays as the pieces spell it
    )
    if tokenizer.pad_token_id != PAD_ID:
        raise VocabularyError(
            f"the subword tokenizer's {PAD_TOKEN} is id {tokenizer.pad_token_id}, not {PAD_ID}: "
            "train it with train_subword()"
        )
    return tokenizer


def subword_kind(tokenizer_json: str) -> str:
    """The model type of a ``tokenizers`` JSON (``BPE``, ``Unigram``), for logs."""
    return str(json.loads(tokenizer_json)["model"]["type"])

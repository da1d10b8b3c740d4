"""Greedy CTC decoding on hand-made logits: collapse, blanks, true lengths, frames, text."""

from __future__ import annotations

import pytest
import torch

from asr_lightning.decoding.greedy import (
    greedy_decode,
    greedy_decode_with_frames,
    greedy_path,
    ids_to_text,
)
from asr_lightning.text.vocab import build_vocab, make_tokenizer

BLANK, A, B, C = 0, 3, 4, 5
VOCAB_SIZE = 6


def one_hot_logits(*paths: list[int]) -> torch.Tensor:
    """(B, T, V) logits whose argmax follows each path; shorter paths are padded with C."""
    frames = max(len(path) for path in paths)
    logits = torch.zeros(len(paths), frames, VOCAB_SIZE)
    for row, path in enumerate(paths):
        padded = path + [C] * (frames - len(path))
        logits[row, torch.arange(frames), torch.tensor(padded)] = 10.0
    return logits


def lengths(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def test_repeats_collapse_and_blanks_separate_double_letters():
    logits = one_hot_logits([A, A, BLANK, A, B, B, BLANK, BLANK])

    assert greedy_decode(logits, lengths(8), BLANK) == [[A, A, B]]


def test_frames_mark_where_each_token_run_starts_and_ends():
    logits = one_hot_logits([BLANK, A, A, BLANK, A, B, B, BLANK])

    (hypothesis,) = greedy_decode_with_frames(logits, lengths(8), BLANK)

    assert hypothesis.ids == [A, A, B]
    assert hypothesis.start_frames == [1, 4, 5]
    assert hypothesis.end_frames == [3, 5, 7]


def test_frames_past_the_true_length_are_ignored():
    # Row 0 is a short clip in a padded batch: its padding frames argmax to C.
    logits = one_hot_logits([A, BLANK, B], [B, B, BLANK, A, C, C])

    assert greedy_decode(logits, lengths(3, 6), BLANK) == [[A, B], [B, A, C]]
    # Decoding the padding as if it were speech appends garbage to the short clip.
    assert greedy_decode(logits, lengths(6, 6), BLANK)[0] == [A, B, C]


def test_one_clip_of_numpy_logits_decodes_like_a_batch_row():
    path = [BLANK, A, A, BLANK, A, B, B, BLANK, C]
    logits = one_hot_logits(path)

    (expected,) = greedy_decode_with_frames(logits, lengths(len(path)), BLANK)
    got = greedy_path(logits[0].numpy(), BLANK)

    assert got == expected
    assert (got.ids, got.start_frames, got.end_frames) == ([A, A, B, C], [1, 4, 5, 8], [3, 5, 7, 9])
    assert greedy_path(logits[0, :0].numpy(), BLANK).ids == []
    with pytest.raises(ValueError, match=r"\(frames, vocab\)"):
        greedy_path(logits.numpy(), BLANK)


def test_a_row_of_zero_frames_decodes_to_nothing():
    logits = one_hot_logits([A, B], [A])

    (empty, _) = greedy_decode_with_frames(logits, lengths(0, 1), BLANK)

    assert (empty.ids, empty.start_frames, empty.end_frames) == ([], [], [])


def test_log_probabilities_decode_like_logits():
    logits = torch.randn(3, 20, VOCAB_SIZE, generator=torch.Generator().manual_seed(0))

    from_logits = greedy_decode(logits, lengths(20, 11, 5), BLANK)
    from_log_probs = greedy_decode(logits.log_softmax(-1), lengths(20, 11, 5), BLANK)

    assert from_logits == from_log_probs


def test_half_precision_logits_decode():
    logits = one_hot_logits([A, BLANK, A]).half()

    assert greedy_decode(logits, lengths(3), BLANK) == [[A, A]]


def test_an_empty_batch_decodes_to_an_empty_list():
    assert greedy_decode(torch.zeros(0, 0, VOCAB_SIZE), torch.zeros(0, dtype=torch.long), 0) == []


@pytest.mark.parametrize(
    ("logits", "output_lengths", "message"),
    [
        (torch.zeros(2, 5), lengths(5, 5), "batch, frames, vocab"),
        (torch.zeros(2, 5, 3), lengths(5), r"shape \(2,\)"),
        (torch.zeros(2, 5, 3), lengths(5, 6), r"\[0, 5\]"),
    ],
)
def test_shape_mistakes_name_the_expected_shape(logits, output_lengths, message):
    with pytest.raises(ValueError, match=message):
        greedy_decode(logits, output_lengths, BLANK)


def test_ids_to_text_keeps_double_letters_and_spaces():
    vocab = build_vocab(["hello world"])
    tokenizer = make_tokenizer(vocab)
    ids = [vocab[c] for c in "hello"] + [vocab["|"]] + [vocab[c] for c in "world"]

    assert ids_to_text(ids, tokenizer) == "hello world"
    assert ids_to_text([], tokenizer) == ""

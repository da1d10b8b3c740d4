"""Make a padded batch give each clip the outputs it gets alone.

Hugging Face CTC models of the wav2vec2 family let padding leak into the valid frames of a
padded batch in two ways, so a clip's transcript depends on the clips it is batched with:

* **group-norm feature encoders** (``feat_extract_norm: group``: wav2vec2-base, HuBERT-base,
  WavLM-base, UniSpeech, SEW) normalize each channel of the first convolution over the whole
  time axis, padding included;
* **convolutions over encoder frames** see the hidden states of padded frames: the depthwise
  convolution of wav2vec2-conformer's conformer blocks and data2vec-audio's five positional
  convolutions (the encoder zeroes padded frames once, before the first of them only).

:func:`guard_padding` fixes both in place, with the lengths the batch's attention mask gives:
the group norm takes its statistics over the valid frames only, and every such convolution
sees zeros on padded frames, as it does past the end of a clip that runs alone. Parameters and
``state_dict`` keys are unchanged (``save_pretrained`` writes the same files), and a call
without an attention mask computes exactly what the unguarded model computes. The lengths
travel as tensors, so ONNX export traces them with dynamic axes.

SEW and SEW-D stay inexact (see :data:`asr_lightning.model.families.PADDING_INEXACT`): their
encoder pools pairs of frames, and a clip's last odd frame is pooled with padding in a batch
but dropped alone.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Attribute of a guarded model holding its :class:`PaddingGuard` (makes guarding idempotent).
GUARD_ATTRIBUTE = "_asr_lightning_padding_guard"
#: Names of the attention-mask keyword of Hugging Face CTC models (OmniASR calls it padding_mask).
MASK_ARGUMENTS = ("attention_mask", "padding_mask")


@dataclass
class PaddingGuard:
    """The valid lengths of the batch a guarded model is running on, and what was guarded.

    The model's forward pre-hook sets ``sample_lengths`` on every call (``None`` without an
    attention mask), and leaves it set after the call: gradient checkpointing runs the hooked
    layers again during backward, before the next forward.
    """

    sample_lengths: torch.Tensor | None = None
    """``(B,)`` valid input samples of each row of the current batch."""
    group_norms: int = 0
    """Group norms replaced by :class:`MaskedGroupNorm`."""
    convolutions: list[str] = field(default_factory=list)
    """Names of the convolutions over encoder frames whose padded inputs are zeroed."""


class MaskedGroupNorm(torch.nn.GroupNorm):
    """``GroupNorm`` with one group per channel whose statistics cover the valid frames only.

    Without lengths it is exactly ``torch.nn.GroupNorm``.
    """

    guard: PaddingGuard | None = None
    conv_kernel: int = 1
    conv_stride: int = 1

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        guard = self.guard
        if guard is None or guard.sample_lengths is None:
            return super().forward(hidden)
        lengths = (
            torch.div(
                guard.sample_lengths - self.conv_kernel, self.conv_stride, rounding_mode="floor"
            )
            + 1
        )  # (B,) valid frames of the first convolution
        if _tracing() or hidden.device.type != "cpu":
            # traced: lengths stay tensors, so the exported graph takes any batch; on an
            # accelerator the per-row loop below would sync for the lengths at every step
            return self._masked(hidden, lengths)
        # on a CPU: statistics of each row over its valid frames in one fused pass per row
        # (``var_mean``), then one pass normalizing the batch, instead of the masked sums'
        # passes over the whole batch (benchmarks/step_cost.py). Padded frames get their row's
        # normalization: no valid output frame of the later convolutions reads them.
        stats = [
            torch.var_mean(hidden[row, :, :valid], dim=-1, unbiased=False)
            for row, valid in enumerate(lengths.clamp(min=1, max=hidden.shape[-1]).tolist())
        ]
        variance = torch.stack([v for v, _ in stats])  # (B, C)
        mean = torch.stack([m for _, m in stats])
        scale = torch.rsqrt(variance + self.eps) * self.weight  # (B, C)
        shift = self.bias - mean * scale
        return torch.addcmul(shift[:, :, None], hidden, scale[:, :, None])

    def _masked(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same with masked sums: tensor operations only (tracing, export, GPUs)."""
        lengths = lengths.clamp(min=1).to(hidden.dtype)
        frames = torch.arange(hidden.shape[-1], device=hidden.device)
        mask = (frames[None, :] < lengths[:, None]).to(hidden.dtype)[:, None, :]  # (B, 1, T)
        count = lengths[:, None, None]
        mean = (hidden * mask).sum(-1, keepdim=True) / count
        centred = hidden - mean
        variance = (centred.square() * mask).sum(-1, keepdim=True) / count
        normed = centred * torch.rsqrt(variance + self.eps)
        return normed * self.weight[None, :, None] + self.bias[None, :, None]


def _tracing() -> bool:
    """Whether the model is being traced (ONNX export, ``torch.jit``) or compiled."""
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    )


def find_guard(model: Any) -> PaddingGuard | None:
    """The guard :func:`guard_padding` installed on ``model``, if any."""
    return getattr(model, GUARD_ATTRIBUTE, None)


def guard_padding(model: Any) -> PaddingGuard:
    """Install the padding fixes on a waveform CTC model (idempotent); see the module docstring.

    Filter-bank models (Parakeet, LASR, w2v-BERT, ...) mask padded frames themselves and get an
    empty guard.

    Args:
        model: a Hugging Face ``*ForCTC`` model.

    Returns:
        the guard, which also records what was changed.
    """
    guard = find_guard(model)
    if guard is not None:
        return guard
    guard = PaddingGuard()
    object.__setattr__(model, GUARD_ATTRIBUTE, guard)  # not a submodule: no state_dict entry
    base = getattr(model, "base_model", model)
    if model.main_input_name != "input_values" or not hasattr(
        model, "_get_feat_extract_output_lengths"
    ):
        return guard
    feature_encoder = next(
        (module for module in base.modules() if hasattr(module, "conv_layers")), None
    )
    if feature_encoder is not None:
        guard.group_norms = _mask_group_norm(feature_encoder.conv_layers[0], guard)
    encoder = getattr(base, "encoder", None)
    if encoder is not None:
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Conv1d) and module.kernel_size[0] > 1:
                module.register_forward_pre_hook(_zero_padded_frames(model, guard))
                guard.convolutions.append(name)
    model.register_forward_pre_hook(_record_lengths(guard), with_kwargs=True)
    if guard.group_norms or guard.convolutions:
        log.debug(
            "padding guard on %s: %d group norm(s), convolutions %s",
            type(model).__name__,
            guard.group_norms,
            guard.convolutions,
        )
    return guard


def _mask_group_norm(layer: Any, guard: PaddingGuard) -> int:
    norm = getattr(layer, "layer_norm", None)
    if type(norm) is not torch.nn.GroupNorm or norm.num_groups != norm.num_channels:
        return 0
    conv = layer.conv
    norm.__class__ = MaskedGroupNorm  # same parameters, same state_dict keys
    norm.guard = guard
    norm.conv_kernel, norm.conv_stride = int(conv.kernel_size[0]), int(conv.stride[0])
    return 1


def _record_lengths(guard: PaddingGuard):
    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        mask = next((kwargs[name] for name in MASK_ARGUMENTS if kwargs.get(name) is not None), None)
        guard.sample_lengths = None if mask is None else mask.sum(-1).to(torch.long)

    return hook


def _zero_padded_frames(model: Any, guard: PaddingGuard):
    frame_lengths = model._get_feat_extract_output_lengths
    # frames of the encoder itself, before an adapter's further striding (wav2vec2 adapters)
    options = (
        {"add_adapter": False}
        if "add_adapter" in inspect.signature(frame_lengths).parameters
        else {}
    )

    def hook(module: Any, args: tuple) -> tuple | None:
        if guard.sample_lengths is None:
            return None
        hidden = args[0]  # (B, C, T) over encoder frames
        lengths = frame_lengths(guard.sample_lengths, **options)
        frames = torch.arange(hidden.shape[-1], device=hidden.device)
        mask = (frames[None, :] < lengths[:, None].to(frames.device)).to(hidden.dtype)
        return (hidden * mask[:, None, :], *args[1:])

    return hook

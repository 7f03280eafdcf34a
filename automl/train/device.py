"""Where a fold trains: CPU or CUDA, with the mixed precision the GPU supports."""

from __future__ import annotations

import torch

from automl.errors import AutomlError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """`auto` picks CUDA when a GPU is visible; `cuda` without one is a clear error."""
    if choice not in DEVICES and not choice.startswith("cuda:"):
        raise AutomlError(f"--device {choice!r}: choose auto, cpu, cuda or cuda:N")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AutomlError(
            f"--device {choice}: no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False); "
            "use --device auto or --device cpu"
        )
    return torch.device("cuda" if choice == "auto" else choice)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None on CPU, where autocast rarely pays."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def memory_format(device: torch.device, channels_last: bool = True) -> torch.memory_format:
    """The layout of image batches and conv weights: channels-last on CUDA (its convolutions run faster so),
    the standard layout elsewhere."""
    return torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format


def device_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights where they are (a best epoch's, kept on the GPU until the fold ends)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights on the CPU in the standard layout: a channels-last model's conv weights are not contiguous, and
    safetensors refuses to save them."""
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in state.items()}


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU in the standard layout."""
    return to_cpu(model.state_dict())

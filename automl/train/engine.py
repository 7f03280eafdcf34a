"""The fold loop: train one model on one fold of one trial and return what the search and the export need.

The loop knows no Optuna: after every epoch it calls `on_epoch(epoch, val_macro_f1)`, and the search passes a
callback that reports to the trial and raises to prune. Whatever happens, memory is released when it ends.
"""

from __future__ import annotations

import gc
import math
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from automl.data.tasks import Task
from automl.train.augment import build_eval_transform, build_train_transform
from automl.train.backbone import normalisation
from automl.train.device import amp_dtype, cpu_state, memory_format, resolve_device
from automl.train.gpu_augment import DeviceImages, GpuBatches, check_gpu_augment
from automl.train.heads import HeadedModel, create_model, resolve_head_params
from automl.train.loader import CachedImages, default_workers, make_loader, seed_everything, split_loader_workers
from automl.train.metrics import accuracy, macro_f1
from automl.train.mixing import mix_batch
from automl.train.optim import create_optimizer, create_scheduler
from automl.train.params import TrainParams
from automl.train.samplers import create_sampler

EpochCallback = Callable[[int, float], None]
#: Training steps between host reads of the loss (divergence checks); every read makes the CPU wait for the GPU.
CHECK_EVERY = 50


class FoldFailed(Exception):
    """A fold that cannot finish (out of memory twice, diverged): the trial fails with this reason."""


class TrainingDiverged(FoldFailed):
    """The loss became NaN or infinite."""


@dataclass
class FoldData:
    """One fold's inputs: every image of the data set, and which rows train and which validate."""

    images: Sequence[np.ndarray]  # all rows, decoded by the image cache
    true_labels: np.ndarray  # all rows: what validation scores against
    train_labels: np.ndarray  # all rows: what training learns; -1 leaves a row out
    train_index: np.ndarray
    val_index: np.ndarray
    num_classes: int
    task: Task | None = None  # what the heads need to know of it: its age edges, its parts
    ages: np.ndarray | None = None  # all rows: the ages in years that age heads train on (training_ages)


@dataclass(frozen=True)
class Runtime:
    """How to run, not what to learn: the same trial gives the same model on any of these."""

    device: str = "auto"
    num_workers: int | None = None  # loader processes of a fold, both loaders together; None: loader.default_workers
    amp: bool = True  # mixed precision on CUDA
    channels_last: bool = True  # on CUDA


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class FoldResult:
    curve: list[EpochRecord]
    best_epoch: int
    best_f1: float
    val_index: np.ndarray
    val_probs: np.ndarray  # (len(val_index), num_classes) at the best epoch
    state_dict: dict[str, torch.Tensor] = field(repr=False)  # best weights, on the CPU
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images_per_second: float  # training throughput
    peak_memory_mb: float  # CUDA: peak allocated; CPU: the process's peak resident memory
    batch_size: int  # after an out-of-memory retry, the halved size
    accumulation: int
    params: TrainParams  # resolved: the normalisation and the head's edges it trained with


def train_fold(
    data: FoldData, params: TrainParams, runtime: Runtime = Runtime(), on_epoch: EpochCallback | None = None
) -> FoldResult:
    """Train with early stopping on validation macro F1; on out-of-memory, retry once at half the batch.

    Only an attempt that has reported nothing is retried. A fixed-size batch reaches its peak memory within the
    first epoch (the first training step, the first validation pass, cuDNN's benchmark of both), and `on_epoch`
    is called when an epoch ends, so the usual out-of-memory error comes before any report. A retry after a
    report would report the same epochs again: Optuna keeps the first value of a step, and the retried fold
    would be pruned against the failed attempt's curve. So a later out-of-memory error fails the fold instead.
    """
    device = resolve_device(runtime.device)
    attempts = [(params.batch_size, 1), (max(1, params.batch_size // 2), 2)]
    reported = False

    def report(epoch: int, f1: float) -> None:
        nonlocal reported
        reported = True
        if on_epoch is not None:
            on_epoch(epoch, f1)

    try:
        for batch_size, accumulation in attempts:
            try:
                return FoldRun(data, params, runtime, device, batch_size, accumulation).run(report)
            except torch.OutOfMemoryError:
                if reported:
                    raise FoldFailed(
                        f"out of memory at batch size {batch_size} after epochs were already reported (a batch "
                        "this size fitted before); lower batch_size or image_size"
                    ) from None
            # Freed outside the handler: inside it, the exception's traceback still holds the failed run's tensors.
            _release(device)
        raise FoldFailed(
            f"out of memory at batch size {params.batch_size}, and again at {attempts[1][0]} with 2-step "
            "gradient accumulation; lower batch_size or image_size"
        )
    finally:
        _release(device)


def resolved_params(params: TrainParams, task: Task, ages: np.ndarray | None) -> TrainParams:
    """The parameters a fold run of `params` trains with (the head's edges, the normalisation), without training:
    for weights trained earlier."""
    params = resolve_head_params(params, task, ages)
    model = create_model(replace(params, pretrained=False, weights_file=None), task.num_classes)
    mean, std = normalisation(model.backbone, params)
    return replace(params, mean=mean, std=std)


class FoldRun:
    """One attempt at a fold: the model, its loaders and optimiser, built from the trial's parameters."""

    def __init__(
        self,
        data: FoldData,
        params: TrainParams,
        runtime: Runtime = Runtime(),
        device: torch.device | None = None,
        batch_size: int | None = None,
        accumulation: int = 1,
    ):
        device = device or resolve_device(runtime.device)
        batch_size = batch_size or params.batch_size
        seed_everything(params.seed)
        self.data, self.device, self.batch_size, self.accumulation = data, device, batch_size, accumulation
        params = resolve_head_params(params, data.task, data.ages)
        self.model = create_model(params, data.num_classes).to(device)
        self.mean, self.std = normalisation(self.model.backbone, params)
        self.params = params = replace(params, mean=self.mean, std=self.std)
        self.memory_format = memory_format(device, runtime.channels_last)
        if device.type == "cuda":
            # Training batches all have one size (drop_last): cuDNN benchmarks its algorithms once, then reuses them.
            torch.backends.cudnn.benchmark = True
        self.model = self.model.to(memory_format=self.memory_format)
        self.amp_dtype = amp_dtype(device) if runtime.amp else None

        train_rows = data.train_index[data.train_labels[data.train_index] >= 0]
        train_labels = data.train_labels[train_rows]
        # The head's targets (class codes, fine bins, ages...) train; the samplers still draw by class.
        head = self.model.head
        train_targets = head.targets(train_labels, None if data.ages is None else data.ages[train_rows])
        self.loss_fn = head.build_loss(params, train_targets).to(device)
        sampler = create_sampler(
            train_labels, params, torch.Generator().manual_seed(params.seed + 1), num_classes=data.num_classes
        )
        loaders = default_workers(device) if runtime.num_workers is None else runtime.num_workers
        train_workers, val_workers = split_loader_workers(loaders)
        check_gpu_augment(params)
        train_images = [data.images[i] for i in train_rows]
        if params.augment_device == "gpu":
            self.train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] = GpuBatches(
                DeviceImages(train_images, device), train_targets, params, batch_size, params.seed, sampler
            )
            val_workers = loaders  # the training batches need no loader processes
        else:
            self.train_loader = make_loader(
                CachedImages(train_images, train_targets, build_train_transform(params)),
                batch_size, train=True, device=device, seed=params.seed, sampler=sampler, num_workers=train_workers,
            )  # fmt: skip
        self.val_loader = make_loader(
            CachedImages(
                [data.images[i] for i in data.val_index], data.true_labels[data.val_index], build_eval_transform(params)
            ),
            batch_size * 2, train=False, device=device, seed=params.seed, num_workers=val_workers,
        )  # fmt: skip
        self.mix_generator = torch.Generator().manual_seed(params.seed + 2)
        self.optimizer = create_optimizer(self.model, params)
        self.scheduler = create_scheduler(self.optimizer, params, math.ceil(len(self.train_loader) / self.accumulation))
        self.ema = ModelEmaV3(self.model, decay=params.ema_decay) if params.ema else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def run(self, on_epoch: EpochCallback | None) -> FoldResult:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        curve: list[EpochRecord] = []
        best: tuple[float, int, np.ndarray, dict[str, torch.Tensor]] | None = None
        trained_images, train_seconds = 0, 0.0
        for epoch in range(1, self.params.epochs + 1):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, images = self.train_steps(self.train_loader, epoch)
            train_seconds += time.perf_counter() - started
            trained_images += images
            evaluated = self.ema.module if self.ema is not None else self.model
            probs, val_loss = self._predict(evaluated)
            true = self.data.true_labels[self.data.val_index]
            f1 = macro_f1(true, probs.argmax(1))
            curve.append(
                EpochRecord(
                    epoch, train_loss, val_loss, f1, accuracy(true, probs.argmax(1)), lr, time.perf_counter() - started
                )
            )
            if best is None or f1 > best[0]:
                best = (f1, epoch, probs, cpu_state(evaluated))
            if on_epoch is not None:
                on_epoch(epoch, f1)
            if epoch - best[1] >= self.params.patience:
                break
        assert best is not None
        return FoldResult(
            curve=curve,
            best_epoch=best[1],
            best_f1=best[0],
            val_index=self.data.val_index,
            val_probs=best[2],
            state_dict=best[3],
            mean=self.mean,
            std=self.std,
            images_per_second=trained_images / max(train_seconds, 1e-9),
            peak_memory_mb=self._peak_memory_mb(),
            batch_size=self.batch_size,
            accumulation=self.accumulation,
            params=self.params,
        )

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_steps(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int = 1) -> tuple[float, int]:
        """Train on `batches` (an epoch of the loader); returns the mean loss and the number of images.

        The loss stays on the device: reading it (or testing it) every step would make the CPU wait for the GPU
        each time. Divergence is checked every `CHECK_EVERY` steps and at the end, so a NaN stops the fold at most
        that many steps late.
        """
        self.model.train()
        total = torch.zeros((), device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        images, step, checked = 0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for step, (x, y) in enumerate(batches, start=1):
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            x, y_a, y_b, lam = mix_batch(x, y, self.params, self.mix_generator)
            with self._autocast():
                outputs = self.model(x)
                loss = self.loss_fn(outputs, y_a) if lam >= 1.0 else (
                    lam * self.loss_fn(outputs, y_a) + (1.0 - lam) * self.loss_fn(outputs, y_b)
                )  # fmt: skip
            finite &= torch.isfinite(loss.detach())
            self.scaler.scale(loss / self.accumulation).backward()
            if step % self.accumulation == 0:
                self._optimizer_step()
            total += loss.detach().float() * len(y)
            images += len(y)
            if step % CHECK_EVERY == 0:
                self._check_finite(finite, total, epoch, checked, step)
                checked = step
        if step % self.accumulation:
            self._optimizer_step()  # the last, partial accumulation
        self._check_finite(finite, total, epoch, checked, step)
        return total.item() / max(images, 1), images

    @staticmethod
    def _check_finite(finite: torch.Tensor, total: torch.Tensor, epoch: int, after: int, upto: int) -> None:
        if not bool(finite):  # the one host synchronisation of the window
            raise TrainingDiverged(
                f"loss became {total.item()} at epoch {epoch}, between batches {after + 1} and {upto}; lower lr, "
                "or keep grad_clip on"
            )

    def _optimizer_step(self) -> None:
        if self.params.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.params.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    @torch.no_grad()
    def _predict(self, model: HeadedModel) -> tuple[np.ndarray, float]:
        """Validation probabilities and mean loss, read back from the device once, at the end."""
        model.eval()
        probs, loss, count = [], torch.zeros((), device=self.device), 0
        for x, y in self.val_loader:
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with self._autocast():
                outputs = model(x).float()
            batch = model.head.probs(outputs)  # class probabilities, whatever the head
            loss += F.nll_loss(batch.clamp(min=1e-12).log(), y, reduction="sum")
            count += len(y)
            probs.append(batch)
        return torch.cat(probs).cpu().numpy(), loss.item() / max(count, 1)

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

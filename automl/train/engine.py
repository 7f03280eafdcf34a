"""The fold loop: train one model on one fold of one trial and return what the search and the export need.

The loop knows no Optuna: after every epoch it calls `on_epoch(epoch, val_macro_f1)`, and the search passes a
callback that reports to the trial and raises to prune. It runs in a `TrainSession` (the worker's images on the
device, its loader processes), so a fold spends its time in its epochs: no process started, no image uploaded, no
memory freed for one fold; the best epoch's weights stay on the device until the fold ends.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from automl.data.tasks import Task
from automl.train.backbone import normalisation
from automl.train.device import amp_dtype, device_state, memory_format, to_cpu
from automl.train.gpu_augment import GpuBatches, resolve_augment_device
from automl.train.heads import HeadedModel, create_model, resolve_head_params
from automl.train.inference import PLAIN, predict_views
from automl.train.loader import seed_everything
from automl.train.metrics import accuracy, macro_f1
from automl.train.mixing import mix_batch
from automl.train.optim import create_optimizer, create_scheduler
from automl.train.params import TrainParams
from automl.train.samplers import EpochOrder, create_sampler
from automl.train.session import Runtime, TrainSession

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
    data: FoldData,
    params: TrainParams,
    session: TrainSession | Runtime | None = None,
    on_epoch: EpochCallback | None = None,
    stop_after: int | None = None,
) -> FoldResult:
    """Train with early stopping on validation macro F1; on out-of-memory, retry once at half the batch.

    `session`: the worker's (images on the device, loader processes), or a runtime (default: `Runtime()`) to train
    this one fold in a session of its own. `stop_after`: end after that many epochs, the learning-rate schedule
    still that of `params.epochs` (a refit on every image stops where the folds' best epochs were).

    Only an attempt that has reported nothing is retried. A fixed-size batch reaches its peak memory within the first
    epoch (the first training step, the first validation pass, cuDNN's benchmark of both), and `on_epoch` is called
    when an epoch ends, so the usual out-of-memory error comes before any report. A retry after a report would report
    the same epochs again: Optuna keeps the first value of a step, and the retried fold would be pruned against the
    failed attempt's curve. So a later out-of-memory error fails the fold instead.
    """
    if not isinstance(session, TrainSession):
        with TrainSession(session or Runtime()) as own:
            return train_fold(data, params, own, on_epoch, stop_after)
    attempts = [(params.batch_size, 1), (max(1, params.batch_size // 2), 2)]
    reported = False

    def report(epoch: int, f1: float) -> None:
        nonlocal reported
        reported = True
        if on_epoch is not None:
            on_epoch(epoch, f1)

    for batch_size, accumulation in attempts:
        try:
            return FoldRun(data, params, session, batch_size, accumulation).run(report, stop_after)
        except torch.OutOfMemoryError:
            if reported:
                session.free_memory(keep=data.images)
                raise FoldFailed(
                    f"out of memory at batch size {batch_size} after epochs were already reported (a batch "
                    "this size fitted before); lower batch_size or image_size"
                ) from None
        # Freed outside the handler: inside it, the exception's traceback still holds the failed run's tensors.
        session.free_memory(keep=data.images)
    raise FoldFailed(
        f"out of memory at batch size {params.batch_size}, and again at {attempts[1][0]} with 2-step "
        "gradient accumulation; lower batch_size or image_size"
    )


def resolved_params(params: TrainParams, task: Task, ages: np.ndarray | None) -> TrainParams:
    """The parameters a fold run of `params` trains with (the head's edges, the normalisation), without training:
    for weights trained earlier."""
    params = resolve_head_params(params, task, ages)
    model = create_model(replace(params, pretrained=False, weights_file=None), task.num_classes)
    mean, std = normalisation(model.backbone, params)
    return replace(params, mean=mean, std=std)


class FoldRun:
    """One attempt at a fold: the model, its batches and optimiser, built from the trial's parameters."""

    def __init__(
        self,
        data: FoldData,
        params: TrainParams,
        session: TrainSession,
        batch_size: int | None = None,
        accumulation: int = 1,
    ):
        device = session.device
        batch_size = batch_size or params.batch_size
        seed_everything(params.seed)
        self.data, self.session, self.device = data, session, device
        self.batch_size, self.accumulation = batch_size, accumulation
        params = resolve_head_params(params, data.task, data.ages)
        self.model = create_model(params, data.num_classes).to(device)
        self.mean, self.std = normalisation(self.model.backbone, params)
        self.params = params = replace(params, mean=self.mean, std=self.std)
        self.augment_device = augment = resolve_augment_device(params, device)  # not in params: the same on any device
        self.memory_format = memory_format(device, session.runtime.channels_last)
        if device.type == "cuda":
            # Training batches all have one size (drop_last), validation batches another (the last one padded):
            # cuDNN benchmarks its algorithms once per shape, then reuses them.
            torch.backends.cudnn.benchmark = True
        self.model = self.model.to(memory_format=self.memory_format)
        self.amp_dtype = amp_dtype(device) if session.runtime.amp else None

        train_rows = data.train_index[data.train_labels[data.train_index] >= 0]
        train_labels = data.train_labels[train_rows]
        # The head's targets (class codes, fine bins, ages...) train; the samplers still draw by class.
        head = self.model.head
        train_targets = head.targets(train_labels, None if data.ages is None else data.ages[train_rows])
        self.loss_fn = head.build_loss(params, train_targets).to(device)
        sampler = create_sampler(
            train_labels, params, torch.Generator().manual_seed(params.seed + 1), num_classes=data.num_classes
        )
        order = EpochOrder(len(train_rows), batch_size, params.seed, sampler)
        self.train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
        if augment == "gpu":
            images = session.device_images(data.images)
            self.train_loader = GpuBatches(images, train_rows, train_targets, params, order, params.seed)
        else:
            self.train_loader = session.cpu_feed().training(
                data.images, train_rows, train_targets, params, order, params.seed
            )
        self.mix_generator = torch.Generator().manual_seed(params.seed + 2)
        self.optimizer = create_optimizer(self.model, params)
        self.scheduler = create_scheduler(self.optimizer, params, math.ceil(len(self.train_loader) / self.accumulation))
        self.ema = ModelEmaV3(self.model, decay=params.ema_decay) if params.ema else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def run(self, on_epoch: EpochCallback | None, stop_after: int | None = None) -> FoldResult:
        """Train up to `params.epochs` epochs (or `stop_after`). With validation rows, keep the best epoch's weights
        and stop after `patience` epochs without a better macro F1; without (a refit on every image), train every
        epoch and keep the last (`on_epoch` gets a NaN F1)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        validating = len(self.data.val_index) > 0
        curve: list[EpochRecord] = []
        best: tuple[float, int, np.ndarray, dict[str, torch.Tensor]] | None = None
        trained_images, train_seconds, spent = 0, 0.0, self.session.spent
        for epoch in range(1, min(self.params.epochs, stop_after or self.params.epochs) + 1):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, images = self.train_steps(self.train_loader, epoch)
            trained = time.perf_counter()
            train_seconds += trained - started
            spent.training += trained - started
            trained_images += images
            evaluated = self.ema.module if self.ema is not None else self.model
            probs, val_loss = self._predict(evaluated)
            spent.validating += time.perf_counter() - trained
            true = self.data.true_labels[self.data.val_index]
            f1 = macro_f1(true, probs.argmax(1)) if validating else float("nan")
            accurate = accuracy(true, probs.argmax(1)) if validating else float("nan")
            curve.append(EpochRecord(epoch, train_loss, val_loss, f1, accurate, lr, time.perf_counter() - started))
            if validating and (best is None or f1 > best[0]):
                best = (f1, epoch, probs, device_state(evaluated))  # to the CPU once, when the fold ends
            if on_epoch is not None:
                on_epoch(epoch, f1)
            if best is not None and epoch - best[1] >= self.params.patience:
                break
        if best is None:  # no validation: the last epoch
            best = (float("nan"), curve[-1].epoch, probs, device_state(evaluated))
        return FoldResult(
            curve=curve,
            best_epoch=best[1],
            best_f1=best[0],
            val_index=self.data.val_index,
            val_probs=best[2],
            state_dict=to_cpu(best[3]),
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

    def _predict(self, model: HeadedModel) -> tuple[np.ndarray, float]:
        """Validation probabilities (the plain view, as the export predicts) and their mean loss."""
        rows = self.data.val_index
        views = predict_views(model, self.data.images, rows, self.params, (PLAIN,), self.session, self.batch_size * 2)
        probs = views[PLAIN]
        if not len(rows):
            return probs, float("nan")
        picked = probs[np.arange(len(rows)), self.data.true_labels[rows]]
        return probs, float(-np.log(np.clip(picked, 1e-12, None)).mean())

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""A model's class probabilities for rows of an image set: every epoch's validation pass, the export's out-of-fold
and eval predictions and `automl predict` all go through `predict_views`, so they see the same pixels.

Views (test-time augmentation): `plain` is the eval transform (the centred view of the training crop); `flip`
mirrors it left to right, in the same forward pass; `crop` looks closer: a centred crop of a slightly larger resize
(the middle ~89% of the face). On CUDA the images are cut from the session's image set on the device, in batches of
one shape; on a CPU albumentations makes them (the session's feed). Probabilities are read back once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from automl.train.device import amp_dtype, memory_format
from automl.train.heads import HeadedModel
from automl.train.params import TrainParams
from automl.train.session import TrainSession

PLAIN, FLIP, CROP = "plain", "flip", "crop"
VIEWS = (PLAIN, FLIP, CROP)
#: The crop view resizes to this much more than the eval transform, then takes the same centred square.
CROP_ZOOM = 1.125
BATCH_SIZE = 64


@torch.no_grad()
def predict_views(
    model: HeadedModel,
    arrays: Sequence[np.ndarray],
    rows: np.ndarray,
    params: TrainParams,
    views: Sequence[str],
    session: TrainSession,
    batch_size: int = BATCH_SIZE,
) -> dict[str, np.ndarray]:
    """Class probabilities (len(rows), classes) of `model` (its head's, whatever the head) on `arrays[rows]`, for
    each view: as in training, channels-last and mixed precision on CUDA."""
    device = session.device
    layout = memory_format(device, session.runtime.channels_last)
    model = model.to(device).to(memory_format=layout).eval()
    dtype = amp_dtype(device) if session.runtime.amp else None
    found: dict[str, list[torch.Tensor]] = {}
    for view, zoom in ((PLAIN, 1.0), (CROP, CROP_ZOOM)):
        mirror = view == PLAIN and FLIP in views
        if view not in views and not mirror:
            continue
        if device.type == "cuda":
            batches = session.device_images(arrays).eval_batches(rows, params, batch_size, zoom)
        else:
            batches = session.cpu_feed().evaluation(arrays, rows, params, batch_size, zoom)
        for x, count in batches:
            x = x.to(device, non_blocking=True)
            if mirror:
                x = torch.cat([x, x.flip(3)])  # the plain view, then the same images mirrored
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs = model(x.contiguous(memory_format=layout))
            probs = model.head.probs(outputs.float())
            found.setdefault(view, []).append(probs[:count])
            if mirror:
                found.setdefault(FLIP, []).append(probs[len(x) // 2 : len(x) // 2 + count])
    empty = np.zeros((0, model.head.num_classes), dtype=np.float32)
    return {view: torch.cat(found[view]).cpu().numpy() if view in found else empty for view in views}

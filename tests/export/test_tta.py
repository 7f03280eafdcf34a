"""TTA views predicted together give what each view gives alone, on CPU as on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.export.tta import CROP, FLIP, PLAIN
from automl.train.heads import create_model
from automl.train.inference import predict_views
from automl.train.params import TrainParams
from automl.train.session import Runtime, TrainSession

PARAMS = TrainParams(
    backbone="test_resnet", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop="center_weighted"
)


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = create_model(PARAMS, 3)
    rng = np.random.default_rng(0)
    return model, [rng.integers(0, 255, (32, 43, 3), dtype=np.uint8) for _ in range(70)]  # two batches


CPU = Runtime(device="cpu")


def predict(model, images, views, runtime: Runtime = CPU, rows=None) -> dict[str, np.ndarray]:
    with TrainSession(runtime) as session:
        rows = np.arange(len(images)) if rows is None else rows
        return predict_views(model, images, rows, PARAMS, views, session)


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_views_together_equal_views_alone(model_and_images, loader_workers: int) -> None:
    model, images = model_and_images
    together = predict(model, images, (PLAIN, FLIP, CROP), Runtime(device="cpu", num_workers=loader_workers))
    for view in (PLAIN, FLIP, CROP):
        alone = predict(model, images, (view,))[view]
        assert together[view].shape == (70, 3) and np.allclose(together[view], alone, atol=1e-5)
    mirrored = predict(model, [image[:, ::-1] for image in images], (PLAIN,))[PLAIN]
    assert np.allclose(together[FLIP], mirrored, atol=1e-5)  # flip is the plain view, mirrored
    assert np.allclose(predict(model, images, (CROP, FLIP))[FLIP], together[FLIP], atol=1e-5)
    assert not np.allclose(together[PLAIN], together[CROP], atol=1e-3)
    some = np.array([5, 1, 64, 3])
    assert np.allclose(predict(model, images, (PLAIN,), rows=some)[PLAIN], together[PLAIN][some], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_views_on_the_gpu_match_the_cpu_within_mixed_precision(model_and_images) -> None:
    model, images = model_and_images
    cpu = predict(model, images, (PLAIN, FLIP, CROP))
    gpu = predict(model, images, (PLAIN, FLIP, CROP), Runtime(device="cuda"))
    for view in cpu:
        assert np.abs(cpu[view] - gpu[view]).max() < 0.05
        assert (cpu[view].argmax(1) == gpu[view].argmax(1)).mean() > 0.9

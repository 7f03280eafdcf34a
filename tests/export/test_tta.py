"""TTA views predicted together in one forward pass give what each view gives alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.export.tta import CROP, FLIP, PLAIN, predict_views
from automl.train.heads import create_model
from automl.train.params import TrainParams

PARAMS = TrainParams(
    backbone="test_resnet", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop="center_weighted"
)


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = create_model(PARAMS, 3)
    rng = np.random.default_rng(0)
    return model, [rng.integers(0, 255, (36, 48, 3), dtype=np.uint8) for _ in range(70)]  # two batches


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_views_together_equal_views_alone(model_and_images, loader_workers: int) -> None:
    model, images = model_and_images
    cpu = torch.device("cpu")
    together = predict_views(model, images, PARAMS, (PLAIN, FLIP, CROP), cpu, loader_workers)
    for view in (PLAIN, FLIP, CROP):
        alone = predict_views(model, images, PARAMS, (view,), cpu)[view]
        assert together[view].shape == (70, 3) and np.allclose(together[view], alone, atol=1e-5)
    mirrored = predict_views(model, [image[:, ::-1] for image in images], PARAMS, (PLAIN,), cpu)[PLAIN]
    assert np.allclose(together[FLIP], mirrored, atol=1e-5)  # flip is the plain view, mirrored
    assert np.allclose(predict_views(model, images, PARAMS, (CROP, FLIP), cpu)[FLIP], together[FLIP], atol=1e-5)
    assert not np.allclose(together[PLAIN], together[CROP], atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_views_on_the_gpu_match_the_cpu_within_mixed_precision(model_and_images) -> None:
    model, images = model_and_images
    cpu = predict_views(model, images, PARAMS, (PLAIN, FLIP, CROP), torch.device("cpu"))
    gpu = predict_views(model, images, PARAMS, (PLAIN, FLIP, CROP), torch.device("cuda"))
    for view in cpu:
        assert np.abs(cpu[view] - gpu[view]).max() < 0.05
        assert (cpu[view].argmax(1) == gpu[view].argmax(1)).mean() > 0.9

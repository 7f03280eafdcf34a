import timm
import torch
from safetensors.torch import load_file, save_file

from automl.train.device import cpu_state


def test_a_channels_last_models_weights_save_as_safetensors(tmp_path) -> None:
    # On CUDA the engine trains channels-last; the conv weights it keeps must still be savable (seen on an H200).
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).to(memory_format=torch.channels_last)
    assert not model.conv1[0].weight.is_contiguous()
    state = cpu_state(model)
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value) and loaded[name].is_contiguous()
    assert state["conv1.0.weight"].data_ptr() != model.conv1[0].weight.data_ptr()  # a copy, not a view

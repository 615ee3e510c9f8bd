"""Access to the reference tensors copied from the released checkpoint contract."""

import json
from pathlib import Path

import numpy as np
import torch

REF = Path(__file__).parent / "data" / "reference"


def npz(name: str) -> dict:
    with np.load(REF / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


def tiny_config() -> dict:
    return json.loads((REF / "unet_tiny_config.json").read_text())


def tiny_model():
    from cwdm.unet import UNet, UNetConfig

    model = UNet(UNetConfig(**tiny_config()))
    model.load_state_dict(torch.load(REF / "unet_tiny.pt", map_location="cpu", weights_only=True), strict=True)
    return model.eval()

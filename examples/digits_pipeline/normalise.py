"""Pre-processing for the digits pipeline: raw 8x8 pixel intensities (0-16, as bytes) -> the model's floats."""

import numpy as np

INPUTS = ["pixels_raw:uint8:64"]
OUTPUTS = ["pixels:float32:64"]


def process(inputs):
    return {"pixels": inputs["pixels_raw"].astype(np.float32) / 16.0}

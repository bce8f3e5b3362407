"""Post-processing for the digits pipeline: class probabilities -> the predicted digit and its probability."""

import numpy as np

INPUTS = ["probabilities:float32:10"]
OUTPUTS = ["digit:int64:1", "confidence:float32:1"]


def process(inputs):
    probabilities = inputs["probabilities"]
    digit = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(digit)), digit]
    return {"digit": digit.reshape(-1, 1).astype(np.int64), "confidence": confidence.reshape(-1, 1).astype(np.float32)}

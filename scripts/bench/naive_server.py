"""The baseline many teams build first: FastAPI + onnxruntime, one forward per request, JSON in and out.

Usage: python scripts/bench/naive_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


class Request(BaseModel):
    inputs: list[list[float]]


@app.post("/predict")
def predict(request: Request) -> dict:
    outputs = session.run(None, {input_name: np.asarray(request.inputs, dtype=np.float32)})
    return {"outputs": outputs[0].tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")

"""An nnmark ONNX export wrapped as a third party would serve it: the input declared in one of
three layouts, the answer given as one of three output kinds. Shared by the KServe and MLServer
runtimes in this folder.

Environment: NNMARK_ONNX (the .onnx file), NNMARK_LAYOUT (nchw | nhwc | flat),
NNMARK_OUTPUT (probabilities | logits | labels), NNMARK_SHAPE (C,H,W), NNMARK_CLASSES.
"""

import os

import numpy as np
import onnxruntime as ort

LAYOUTS = {"nchw": "input", "nhwc": "image", "flat": "x"}
OUTPUTS = {"probabilities": "probabilities", "logits": "logits", "labels": "label"}


class Wrapped:
    def __init__(self):
        self.path = os.environ["NNMARK_ONNX"]
        self.layout = os.environ.get("NNMARK_LAYOUT", "nchw")
        self.kind = os.environ.get("NNMARK_OUTPUT", "probabilities")
        self.c, self.h, self.w = (int(v) for v in os.environ.get("NNMARK_SHAPE", "1,28,28").split(","))
        self.classes = int(os.environ.get("NNMARK_CLASSES", "10"))
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.onnx_input = self.session.get_inputs()[0].name
        self.input_name = LAYOUTS[self.layout]
        self.output_name = OUTPUTS[self.kind]

    def input_shape(self):
        c, h, w = self.c, self.h, self.w
        return {"nchw": [-1, c, h, w], "nhwc": [-1, h, w, c], "flat": [-1, c * h * w]}[self.layout]

    def output_type(self):
        if self.kind == "labels":
            return {"name": self.output_name, "datatype": "INT64", "shape": [-1]}
        return {"name": self.output_name, "datatype": "FP32", "shape": [-1, self.classes]}

    def run(self, x):
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if self.layout == "nhwc":
            x = x.reshape(n, self.h, self.w, self.c).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x.reshape(n, self.c, self.h, self.w))
        logits = self.session.run(None, {self.onnx_input: x})[0]
        if self.kind == "logits":
            return logits.astype(np.float32)
        if self.kind == "labels":
            return logits.argmax(axis=1).astype(np.int64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

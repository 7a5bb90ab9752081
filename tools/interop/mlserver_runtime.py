"""An MLServer custom runtime serving an nnmark ONNX export through onnxruntime, as a third
party would deploy it (see onnx_model.py for the environment it reads). MLServer loads it from
model-settings.json: "implementation": "mlserver_runtime.OnnxRuntimeModel"."""

import os
import sys

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_model import Wrapped  # noqa: E402


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        self.wrapped = Wrapped()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        if tensor.name != self.wrapped.input_name:
            raise ValueError(f"unexpected input '{tensor.name}'")
        y = self.wrapped.run(NumpyCodec.decode_input(tensor))
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(self.wrapped.output_name, y)],
        )

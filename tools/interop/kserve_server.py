"""KServe's ModelServer (the kserve package's Python server) hosting an nnmark ONNX export
through onnxruntime. Usage: NNMARK_ONNX=... NNMARK_LAYOUT=... NNMARK_OUTPUT=... \
python kserve_server.py PORT MODEL_NAME (see onnx_model.py for the variables)."""

import sys

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from onnx_model import Wrapped  # noqa: E402


class OnnxModel(Model):
    def __init__(self, name):
        super().__init__(name)
        self.wrapped = Wrapped()
        self.ready = True

    def get_input_types(self):
        return [{"name": self.wrapped.input_name, "datatype": "FP32",
                 "shape": self.wrapped.input_shape()}]

    def get_output_types(self):
        return [self.wrapped.output_type()]

    async def predict(self, payload, headers=None, response_headers=None):
        if not isinstance(payload, InferRequest):
            raise TypeError("this model takes v2 requests")
        tensor = payload.inputs[0]
        if tensor.name != self.wrapped.input_name:
            raise ValueError(f"unexpected input '{tensor.name}'")
        y = self.wrapped.run(tensor.as_numpy())
        out = InferOutput(name=self.wrapped.output_name, shape=list(y.shape),
                          datatype="INT64" if y.dtype.kind == "i" else "FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)


if __name__ == "__main__":
    port, name = int(sys.argv[1]), sys.argv[2]
    sys.argv = sys.argv[:1]
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([OnnxModel(name)])

"""Drives `nnmark serve` (v2 protocol) with KServe's official REST client (InferenceRESTClient).

Usage: python kserve_client.py HOST:PORT MODEL FIXTURE.json

FIXTURE is the one triton_client.py reads. Every call the client offers for the v2 protocol is
made, with JSON and binary inputs and outputs; answers are compared with nnmark's local
prediction. Prints one JSON line with the checks that passed; exits non-zero on a failure.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

checks = []


def check(name, ok, detail=""):
    if not ok:
        raise SystemExit(f"FAILED {name}: {detail}")
    checks.append(name)


async def main(url, model, fixture_path):
    with open(fixture_path) as f:
        fx = json.load(f)
    x = np.asarray(fx["images"], dtype=np.float32).reshape([-1] + fx["shape"])
    n = x.shape[0]
    labels = np.asarray(fx["labels"], dtype=np.int64)
    probs = np.asarray(fx["probabilities"], dtype=np.float32).reshape(n, -1)
    reveal = fx["reveal"]
    base = f"http://{url}"
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    check("is_server_live", await client.is_server_live(base))
    check("is_server_ready", await client.is_server_ready(base))
    check("is_model_ready", await client.is_model_ready(base, model))
    check("is_model_ready of an unknown model is false",
          not await client.is_model_ready(base, "nope"))

    def outputs_by_name(response):
        return {o.name: o.as_numpy() for o in response.outputs}

    for binary_in in (True, False):
        for binary_out in (None, True, False):
            what = f"infer in={'bin' if binary_in else 'json'} out={binary_out}"
            inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            inp.set_data_from_numpy(x, binary_data=binary_in)
            wanted = None
            if binary_out is not None:
                names = ["label"] + (["probabilities"] if reveal == "probabilities" else [])
                wanted = [RequestedOutput(name, {"binary_data": binary_out}) for name in names]
            req = InferRequest(model_name=model, infer_inputs=[inp], request_id="kserve-1",
                               request_outputs=wanted)
            res = await client.infer(base, req, model_name=model)
            check(what + ": id echoed", res.id == "kserve-1", res.id)
            got = outputs_by_name(res)
            check(what + ": labels", got["label"].tolist() == labels.tolist(), got)
            if reveal == "probabilities":
                check(what + ": probabilities",
                      np.allclose(got["probabilities"].reshape(n, -1), probs, atol=1e-6), got)
    # A plain dict body, as the client also takes, answered as a dict-free InferResponse.
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.flatten().tolist()}]}
    res = await client.infer(base, body, model_name=model)
    check("infer from a dict", outputs_by_name(res)["label"].tolist() == labels.tolist())
    try:
        await client.infer(base, {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                              "data": x.flatten().tolist()}]}, model_name=model)
        raise SystemExit("FAILED unknown input: accepted")
    except httpx.HTTPStatusError as e:
        check("unknown input refused with 400",
              e.response.status_code == 400 and "unexpected inference input" in str(e), str(e))
    await client.close()
    print(json.dumps({"ok": True, "checks": len(checks), "names": checks}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

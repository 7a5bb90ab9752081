"""Drives `nnmark serve` (v2 protocol) with Triton's official Python HTTP client.

Usage: python triton_client.py HOST:PORT MODEL FIXTURE.json

FIXTURE holds images (flat), their shape [C, H, W], and nnmark's local prediction for them
(probabilities and labels), plus the reveal policy the server runs with. Every client call that
Triton supports for a simple classification model is made, on its default settings and with
the binary tensor extension, compression, versions and requested outputs varied; each answer is
compared with the local prediction. Prints one JSON line: the checks that passed. Exits non-zero
on the first failure, naming it.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

checks = []


def check(name, ok, detail=""):
    if not ok:
        raise SystemExit(f"FAILED {name}: {detail}")
    checks.append(name)


def refused(name, call, status, needle):
    """The call must fail with an InferenceServerException of `status` naming `needle`."""
    try:
        call()
    except InferenceServerException as e:
        text = str(e)
        check(name, needle in text and (status is None or str(e.status()) == str(status)),
              f"status {e.status()}, message {text!r}")
        return
    raise SystemExit(f"FAILED {name}: the call succeeded")


def main(url, model, fixture_path):
    with open(fixture_path) as f:
        fx = json.load(f)
    x = np.asarray(fx["images"], dtype=np.float32).reshape([-1] + fx["shape"])
    n = x.shape[0]
    labels = np.asarray(fx["labels"], dtype=np.int64)
    reveal = fx["reveal"]
    probs = np.asarray(fx["probabilities"], dtype=np.float32).reshape(n, -1)
    classes = probs.shape[1]

    c = httpclient.InferenceServerClient(url=url)
    check("is_server_live", c.is_server_live())
    check("is_server_ready", c.is_server_ready())
    check("is_model_ready", c.is_model_ready(model))
    check("is_model_ready version 1", c.is_model_ready(model, "1"))
    check("is_model_ready version 2 is false", not c.is_model_ready(model, "2"))
    server = c.get_server_metadata()
    check("get_server_metadata", "binary_tensor_data" in server.get("extensions", []), server)
    meta = c.get_model_metadata(model)
    check("get_model_metadata", meta["name"] == model and meta["versions"] == ["1"], meta)
    check("get_model_metadata version 1", c.get_model_metadata(model, "1") == meta)
    config = c.get_model_config(model)
    check("get_model_config", config["input"][0]["dims"] == fx["shape"]
          and config["max_batch_size"] >= n, config)
    check("get_model_config version 1", c.get_model_config(model, "1") == config)
    index = c.get_model_repository_index()
    check("get_model_repository_index",
          index == [{"name": model, "version": "1", "state": "READY"}], index)
    check("get_system_shared_memory_status", c.get_system_shared_memory_status() == [])
    check("get_cuda_shared_memory_status", c.get_cuda_shared_memory_status() == [])
    refused("load_model refused", lambda: c.load_model(model), 400, "not allowed")
    refused("unload_model refused", lambda: c.unload_model(model), 400, "not allowed")
    check("get_trace_settings", c.get_trace_settings()["trace_level"] == ["OFF"])
    check("get_trace_settings of the model", c.get_trace_settings(model)["trace_level"] == ["OFF"])
    check("get_log_settings", c.get_log_settings()["log_info"] is True)
    refused("update_trace_settings refused",
            lambda: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}), 400, "fixed")
    refused("update_log_settings refused",
            lambda: c.update_log_settings(settings={"log_info": False}), 400, "fixed")
    refused("register_system_shared_memory refused",
            lambda: c.register_system_shared_memory("r", "/nnmark", 64), 400, "not supported")
    refused("unknown model", lambda: c.get_model_metadata("nope"), 404, "nope")

    input_name = meta["inputs"][0]["name"]
    output_names = [o["name"] for o in meta["outputs"]]
    check("outputs declared", "label" in output_names, output_names)

    def make_input(binary):
        inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        return inp

    def check_label(result, what):
        got = result.as_numpy("label")
        check(what + ": labels", got is not None and got.tolist() == labels.tolist(),
              f"{None if got is None else got.tolist()} vs {labels.tolist()}")

    def check_probs(result, what):
        got = result.as_numpy("probabilities")
        check(what + ": probabilities", got is not None and got.shape == probs.shape
              and np.allclose(got, probs, atol=1e-6), got)

    def check_top(result, k, what):
        got = result.as_numpy("probabilities")
        check(what + ": classification shape", got is not None and got.shape == (n, k),
              None if got is None else got.shape)
        for i in range(n):
            entries = [(e.decode() if isinstance(e, bytes) else e).split(":") for e in got[i]]
            indices = [int(e[1]) for e in entries]
            scores = [float(e[0]) for e in entries]
            check(what + f": top-1 of image {i}", indices[0] == labels[i], entries)
            if reveal == "probabilities":
                want = sorted(range(classes), key=lambda j: (-probs[i][j], j))[:k]
                check(what + f": top-{k} of image {i}", indices == want
                      and np.allclose(scores, probs[i][want], atol=1e-6), (entries, want))

    # The client's defaults: binary inputs, no outputs named (the server is asked for every
    # output in binary form).
    r = c.infer(model, [make_input(True)])
    check_label(r, "default infer")
    if reveal == "probabilities":
        check_probs(r, "default infer")
    # Every combination of binary / JSON both ways, compression both ways, versioned or not.
    for binary_in in (True, False):
        for binary_out in (True, False):
            for algo in (None, "gzip", "deflate"):
                for version in ("", "1"):
                    what = f"infer in={'bin' if binary_in else 'json'} out={'bin' if binary_out else 'json'} compression={algo} version={version or '-'}"
                    outs = [httpclient.InferRequestedOutput("label", binary_data=binary_out)]
                    if reveal == "probabilities":
                        outs.insert(0, httpclient.InferRequestedOutput("probabilities",
                                                                       binary_data=binary_out))
                    r = c.infer(model, [make_input(binary_in)], outputs=outs, model_version=version,
                                request_id="req-42", request_compression_algorithm=algo,
                                response_compression_algorithm=algo)
                    check(what + ": id echoed", r.get_response()["id"] == "req-42", r.get_response())
                    check_label(r, what)
                    if reveal == "probabilities":
                        check_probs(r, what)
    if reveal != "label":
        for k in (1, 3):
            for binary_out in (True, False):
                outs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_out,
                                                        class_count=k)]
                r = c.infer(model, [make_input(True)], outputs=outs)
                check_top(r, k, f"class_count={k} binary={binary_out}")
    else:
        refused("class_count on a label-only server",
                lambda: c.infer(model, [make_input(True)],
                                outputs=[httpclient.InferRequestedOutput("label", class_count=3)]),
                400, "classification")
    handle = c.async_infer(model, [make_input(True)], outputs=[httpclient.InferRequestedOutput("label")])
    check_label(handle.get_result(), "async_infer")
    stats = c.get_inference_statistics(model)
    check("get_inference_statistics", stats["model_stats"][0]["inference_count"] >= n, stats)
    check("get_inference_statistics version 1",
          c.get_inference_statistics(model, "1")["model_stats"][0]["name"] == model)
    check("get_inference_statistics all", len(c.get_inference_statistics()["model_stats"]) == 1)

    # What Triton refuses, refused the same way.
    refused("unknown output",
            lambda: c.infer(model, [make_input(True)],
                            outputs=[httpclient.InferRequestedOutput("logits")]),
            400, "unexpected inference output 'logits'")
    bad = httpclient.InferInput("x", list(x.shape), "FP32")
    bad.set_data_from_numpy(x)
    refused("unknown input", lambda: c.infer(model, [bad]), 400, "unexpected inference input 'x'")
    refused("unknown version", lambda: c.infer(model, [make_input(True)], model_version="7"),
            404, "no version '7'")
    c.close()
    print(json.dumps({"ok": True, "checks": len(checks), "names": checks}))


if __name__ == "__main__":
    main(*sys.argv[1:4])

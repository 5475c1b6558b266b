"""Python reference for tests/bench/infer_throughput: the same ViT (same
shape, LoRA r=16 on query and value, CLS + mean head) served by Python
torch over the Open Inference Protocol v2 gRPC, as a Python service would
usually be written: grpcio's thread pool, one forward pass per request under
torch.inference_mode, a lock so concurrent requests do not oversubscribe the
cores. Optional dynamic batching (--batch N --delay-ms D) groups concurrent
requests as fedtune does.

usage: infer_throughput.py CONFIG_JSON PORT_FILE STUB_DIR
CONFIG_JSON: {"hidden", "layers", "heads", "mlp", "patch", "image", "layer_scale",
"rank", "findings", "threads", "device", "max_batch", "delay_ms"}
Writes the bound port to PORT_FILE and serves until killed.
"""
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import ViT  # noqa: E402  the same module as the training reference


def main():
    with open(sys.argv[1]) as f:
        c = json.load(f)
    port_file, stub_dir = sys.argv[2], sys.argv[3]
    protos = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, "--python_out", stub_dir,
                    "--grpc_python_out", stub_dir, "inference/v2/grpc_predict_v2.proto"], check=True)
    sys.path.insert(0, stub_dir)
    import grpc
    from inference.v2 import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

    if c.get("threads"):
        torch.set_num_threads(c["threads"])
    device = torch.device(c.get("device", "cpu"))
    torch.manual_seed(0)
    model = ViT(c, findings=c["findings"]).to(device).eval()
    side, findings = c["image"], c["findings"]
    lock = threading.Lock()

    def forward(x):
        with lock, torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(x).to(device))).float().cpu().numpy()

    # Optional dynamic batching: a queue drained by one worker.
    max_batch, delay = int(c.get("max_batch", 1)), c.get("delay_ms", 0) / 1000.0
    queue, cv = [], threading.Condition()

    def worker():
        while True:
            with cv:
                while not queue:
                    cv.wait()
                deadline = queue[0][2] + delay
                while len(queue) < max_batch and time.monotonic() < deadline:
                    cv.wait(max(deadline - time.monotonic(), 0))
                batch = queue[:max_batch]
                del queue[:max_batch]
            probs = forward(np.concatenate([b[0] for b in batch]))
            at = 0
            for x, slot, _ in batch:
                slot["out"] = probs[at:at + x.shape[0]]
                at += x.shape[0]
                slot["done"].set()

    if max_batch > 1:
        threading.Thread(target=worker, daemon=True).start()

    class Service(pb_grpc.GRPCInferenceServiceServicer):
        def ModelInfer(self, request, context):
            shape = list(request.inputs[0].shape)
            x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(shape)
            if max_batch > 1:
                slot = {"done": threading.Event()}
                with cv:
                    queue.append((x, slot, time.monotonic()))
                    cv.notify_all()
                slot["done"].wait()
                probs = slot["out"]
            else:
                probs = forward(x)
            reply = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
            out = reply.outputs.add()
            out.name, out.datatype = "probabilities", "FP32"
            out.shape.extend([shape[0], findings])
            reply.raw_output_contents.append(probs.astype("<f4").tobytes())
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    forward(np.zeros((1, 1, side, side), dtype="<f4"))  # warm
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.rename(port_file + ".tmp", port_file)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

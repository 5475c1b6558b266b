"""An Open Inference Protocol v2 gRPC client, as a hospital's own code would
write one: it knows nothing of fedtune but the published protocol.

usage: oip_predict.py ADDRESS MODEL FILE.dcm [GENERATED_DIR]

Reads the radiograph with pydicom, turns it into grey levels in [0, 1]
(rescale, the first VOI window when there is one, MONOCHROME1 inverted),
pads it to a square and resizes it to the side the model's metadata asks
for, then calls ModelInfer with the pixels as raw FP32 bytes and prints the
probability and decision per finding. The Python stubs are generated from
protos/inference/v2/grpc_predict_v2.proto into GENERATED_DIR (a temporary
folder by default) with python3-grpc-tools.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom


def stubs(out_dir):
    protos = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, "--python_out", out_dir,
                    "--grpc_python_out", out_dir, "inference/v2/grpc_predict_v2.proto"], check=True)
    sys.path.insert(0, out_dir)
    from inference.v2 import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


def grey_levels(path, side):
    ds = pydicom.dcmread(path)
    x = ds.pixel_array.astype(np.float64)
    x = x * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        lo, hi = center - width / 2, center + width / 2
    else:
        lo, hi = float(x.min()), float(x.max())
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = 1 - x
    h, w = x.shape
    n = max(h, w)
    square = np.zeros((n, n))
    square[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = x
    # Area averaging onto side x side (each output pixel the mean of the source pixels it covers).
    edges = np.linspace(0, n, side + 1).astype(int)
    out = np.empty((side, side))
    for i in range(side):
        for j in range(side):
            out[i, j] = square[edges[i]:max(edges[i + 1], edges[i] + 1), edges[j]:max(edges[j + 1], edges[j] + 1)].mean()
    return out.astype("<f4")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    address, model, path = sys.argv[1:4]
    out_dir = sys.argv[4] if len(sys.argv) > 4 else tempfile.mkdtemp(prefix="oip-")
    os.makedirs(out_dir, exist_ok=True)
    pb, pb_grpc = stubs(out_dir)
    import grpc
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=model))
    side = int(meta.inputs[0].shape[-1])
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = meta.inputs[0].name, "FP32"
    tensor.shape.extend([1, 1, side, side])
    request.raw_input_contents.append(grey_levels(path, side).tobytes())
    reply = stub.ModelInfer(request)
    outputs = {o.name: (o, raw) for o, raw in zip(reply.outputs, reply.raw_output_contents)}
    findings = json.loads(outputs["probabilities"][0].parameters["findings"].string_param)
    probabilities = np.frombuffer(outputs["probabilities"][1], dtype="<f4")
    positive = np.frombuffer(outputs["positive"][1], dtype=np.uint8)
    print(f"model {reply.model_name} version {reply.model_version} (OIP v2 gRPC, input {side}x{side}):")
    for name, p, yes in zip(findings, probabilities, positive):
        print(f"  {name:<18} {p:.3f}  {'positive' if yes else 'negative'}")


if __name__ == "__main__":
    main()

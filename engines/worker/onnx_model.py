"""ONNX models (OML Services' ONNX and ONNX_IMG types), scored with onnxruntime in the worker.

The stored bytes are Oracle's zip (`<name>.onnx`, `metadata.json`, optional `label.txt`) or a bare `.onnx`.
`metadata.json`'s `function` (classification, regression, clustering, feature_extraction) says how the outputs
read; `regressionOutput`, `classificationProbOutput`, `classificationLabelOutput`, `clusteringProbOutput` and
`clusteringDistanceOutput` name the outputs; image models add `height`, `width`, `mean`, `scale`,
`inputChannel` and `inputTensorDimNames`. Without `metadata.json` the function is read from the outputs: one
float tensor is a regression, a sequence of maps (skl2onnx's ZipMap) a classification, a label plus a
`scores` tensor skl2onnx's k-means. Labels come from the ZipMap's keys, `label.txt`, or else are class numbers.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson

from engines.worker.scoring import (
    Attribute,
    BadInput,
    ModelFailed,
    ModelUnreadable,
    classifications,
    clusters_by_distance,
    clusters_by_probability,
    features,
    regressions,
)

#: Largest metadata.json or label.txt read from a zip, bytes.
MAX_SIDE_FILE = 4 * 1024 * 1024
#: Largest .onnx member unpacked from a zip, bytes (a bomb stops here, not at the worker's memory limit).
MAX_ONNX_BYTES = 1024**3
FUNCTIONS = ("classification", "regression", "clustering", "feature_extraction")
_TYPES = {
    "tensor(float)": "FLOAT",
    "tensor(double)": "DOUBLE",
    "tensor(float16)": "FLOAT16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "STRING",
}


def unpack(data: bytes) -> tuple[bytes, dict[str, Any], list[str] | None]:
    """The ONNX bytes, metadata.json (or {}) and label.txt's lines (or None) of an upload."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return data, {}, None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [i for i in z.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
            onnx = [i for i in names if i.filename.lower().endswith(".onnx")]
            if len(onnx) != 1:
                raise ModelUnreadable(f"the zip must hold exactly one .onnx file, it holds {len(onnx)}")
            meta = _side(z, names, "metadata.json")
            labels = _side(z, names, "label.txt")
            model = _member(z, onnx[0], MAX_ONNX_BYTES)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise ModelUnreadable(f"the zip cannot be read: {e}") from None
    metadata: dict[str, Any] = {}
    if meta is not None:
        try:
            metadata = orjson.loads(meta)
        except orjson.JSONDecodeError as e:
            raise ModelUnreadable(f"metadata.json is not JSON: {e}") from None
        if not isinstance(metadata, dict):
            raise ModelUnreadable("metadata.json must hold a JSON object")
    lines = None
    if labels is not None:
        lines = [line.strip() for line in labels.decode("utf-8", "replace").splitlines() if line.strip()]
    return model, metadata, lines


def _side(z: zipfile.ZipFile, names: list[zipfile.ZipInfo], base: str) -> bytes | None:
    found = [i for i in names if i.filename.rsplit("/", 1)[-1].lower() == base]
    return _member(z, found[0], MAX_SIDE_FILE) if found else None


def _member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, refused past `limit` whatever its header says (a header can lie about the size)."""
    if info.file_size > limit:
        raise ModelUnreadable(f"{info.filename[:200]} is larger than {limit} bytes")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelUnreadable(f"{info.filename[:200]} is larger than {limit} bytes")
    return data


class OnnxModel:
    def __init__(self, data: bytes, image: bool = False) -> None:
        import onnxruntime as ort

        model, self.spec, labels = unpack(data)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for any bad file
            raise ModelUnreadable(f"not an ONNX model onnxruntime can load: {str(e)[:500]}") from None
        self.image = image
        self.inputs = self.session.get_inputs()
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.attributes = [self._attribute(i) for i in self.inputs]
        self.function = self._function()
        self.labels = labels
        self._plan()
        self.metadata = self._describe()

    # -- reading the model ------------------------------------------------------------------------------
    def _attribute(self, node: Any) -> Attribute:
        kind = _TYPES.get(node.type)
        if kind is None:
            raise ModelUnreadable(f"input {node.name} has type {node.type}, which cannot be fed from JSON")
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or [])]
        tail = tuple(shape[1:])
        if tail in ((), (1,)):
            tail = ()
        return Attribute(node.name, kind, tail)

    def _function(self) -> str:
        given = self.spec.get("function")
        if given is not None:
            if not isinstance(given, str) or given.lower() not in FUNCTIONS:
                raise ModelUnreadable(f"metadata.json: function must be one of {', '.join(FUNCTIONS)}")
            return given.lower()
        if any(o.type.startswith("seq(map") for o in self.outputs.values()):
            return "classification"
        names = set(self.outputs)
        if {"label", "scores"} <= names:
            return "clustering"
        if "probabilities" in names and "label" in names:
            return "clustering"
        if len(self.outputs) == 1 and next(iter(self.outputs.values())).type in ("tensor(float)", "tensor(double)"):
            return "regression"
        raise ModelUnreadable(
            "cannot tell what the model predicts: upload a zip with Oracle's metadata.json naming its function"
        )

    def _output(self, key: str, default: str | None) -> str | None:
        name = self.spec.get(key, default)
        if name is not None and name not in self.outputs:
            raise ModelUnreadable(f"metadata.json: {key} names {name!r}, which is no output of the model")
        return name

    def _plan(self) -> None:
        """Which outputs to read, per function (Oracle's rules in docs/compatibility.md)."""
        outs = self.outputs
        self.prob_output = self.label_output = self.distance_output = self.value_output = None
        if self.function == "regression":
            floats = [n for n, o in outs.items() if o.type in ("tensor(float)", "tensor(double)")]
            self.value_output = self._output("regressionOutput", floats[0] if len(outs) == 1 and floats else None)
            if self.value_output is None:
                raise ModelUnreadable("metadata.json: regressionOutput is required when the model has several outputs")
        elif self.function == "classification":
            seq = [n for n, o in outs.items() if o.type.startswith("seq(map")]
            probs = [n for n, o in outs.items() if o.type in ("tensor(float)", "tensor(double)")]
            default = seq[0] if seq else (probs[0] if len(probs) == 1 else None)
            self.prob_output = self._output("classificationProbOutput", default)
            if self.prob_output is None:
                raise ModelUnreadable("metadata.json: classificationProbOutput is required for this model")
            self.label_output = self._output("classificationLabelOutput", None)
        elif self.function == "clustering":
            dist = self.spec.get("clusteringDistanceOutput")
            prob = self.spec.get("clusteringProbOutput")
            if dist is None and prob is None:
                if "scores" in outs:
                    dist = "scores"
                elif "probabilities" in outs:
                    prob = "probabilities"
            if dist is not None:
                self.distance_output = self._output("clusteringDistanceOutput", dist)
            elif prob is not None:
                self.prob_output = self._output("clusteringProbOutput", prob)
            else:
                raise ModelUnreadable("metadata.json: clusteringDistanceOutput or clusteringProbOutput is required")
        else:
            floats = [n for n, o in outs.items() if o.type in ("tensor(float)", "tensor(double)")]
            if not floats:
                raise ModelUnreadable("a feature extraction model needs a float output")
            self.value_output = floats[0]

    def _describe(self) -> dict[str, Any]:
        attributes = [a.describe() for a in self.attributes]
        outputs = [
            {"name": n, "attributeType": _TYPES.get(o.type, "UNKNOWN"), **_shape(o)} for n, o in self.outputs.items()
        ]
        meta: dict[str, Any] = {
            "miningFunction": self.function.upper(),
            "algorithm": "ONNX",
            "attributes": attributes,
            "onnxAttributes": attributes,
            "outputs": outputs,
        }
        if self.labels:
            meta["labels"] = list(self.labels)
        return meta

    # -- images ---------------------------------------------------------------------------------------
    def decode_image(self, value: str | bytes, a: Attribute) -> np.ndarray:
        """An image file (base64 text, or the bytes of `imageData`) as the input's tensor without its batch
        dimension: resized to the input's height and width, channels in `inputChannel` order, `(pixel - mean) *
        scale` per channel, laid out as `inputTensorDimNames` says (else channels first when the input's second
        dimension is 1 or 3)."""
        if not self.image:
            raise BadInput(f"{a.name}: images are accepted by ONNX_IMG models only")
        return decode_image(value, a, self.spec)

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, columns: dict[str, np.ndarray], rows: int, top_n: int | None) -> list[dict[str, Any]]:
        feeds = {}
        for a in self.attributes:
            column = columns[a.name]
            node_rank = len(next(i for i in self.inputs if i.name == a.name).shape or [])
            if not a.shape and node_rank == 2:
                column = column.reshape(rows, 1)
            feeds[a.name] = column
        wanted = [n for n in (self.value_output, self.prob_output, self.distance_output) if n is not None]
        try:
            outs = dict(zip(wanted, self.session.run(wanted, feeds), strict=True))
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error classes
            raise BadInput(f"the model cannot score this input: {str(e)[:1000]}") from None
        if self.function == "regression":
            return regressions(outs[self.value_output])  # type: ignore[index]
        if self.function == "feature_extraction":
            return features(outs[self.value_output])  # type: ignore[index]
        if self.function == "classification":
            probs = outs[self.prob_output]  # type: ignore[index]
            labels, matrix = _probabilities(probs, self.labels)
            return classifications(labels, matrix, top_n)
        if self.distance_output is not None:
            matrix = np.asarray(outs[self.distance_output])
            return clusters_by_distance(_ids(self.labels, matrix.shape[1]), matrix, top_n)
        matrix = np.asarray(outs[self.prob_output])  # type: ignore[index]
        return clusters_by_probability(_ids(self.labels, matrix.shape[1]), matrix, top_n)


def decode_image(value: str | bytes, a: Attribute, spec: dict[str, Any]) -> np.ndarray:
    import base64
    import binascii

    from PIL import Image, UnidentifiedImageError

    if len(a.shape) != 3:
        raise BadInput(f"{a.name}: the input is not an image tensor (its shape is {[-1, *a.shape]})")
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as e:
            raise BadInput(f"{a.name}: not base64 image data: {e}") from None
    names = [str(n).lower() for n in spec.get("inputTensorDimNames") or []]
    channels_first = names.index("channel") == 1 if "channel" in names else a.shape[0] in (1, 3)
    c, h, w = a.shape if channels_first else (a.shape[2], a.shape[0], a.shape[1])
    h = int(spec.get("height") or h)
    w = int(spec.get("width") or w)
    if h <= 0 or w <= 0 or h * w > 64_000_000:
        raise BadInput(f"{a.name}: the model does not say what size its images are (height, width)")
    try:
        with Image.open(io.BytesIO(value)) as img:
            img.draft("RGB", (w, h))
            pixels = np.asarray(img.convert("L" if c == 1 else "RGB").resize((w, h)), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"{a.name}: not an image file that can be read: {str(e)[:200]}") from None
    if c == 1:
        pixels = pixels[:, :, np.newaxis]
    if str(spec.get("inputChannel", "RGB")).upper() == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(spec.get("mean", 0.0), dtype=np.float32)
    scale = np.asarray(spec.get("scale", 1.0), dtype=np.float32)
    pixels = (pixels - mean) * scale
    if channels_first:
        pixels = np.transpose(pixels, (2, 0, 1))
    return pixels.astype(a.dtype if a.dtype is not object else np.float32)


def _shape(node: Any) -> dict[str, Any]:
    shape = node.shape
    if not shape:
        return {}
    return {"shape": [d if isinstance(d, int) and d > 0 else -1 for d in shape]}


def _ids(labels: list[str] | None, n: int) -> list[str]:
    if labels is not None and len(labels) == n:
        return labels
    return [str(i) for i in range(n)]


def _probabilities(probs: Any, labels: list[str] | None) -> tuple[list[str], np.ndarray]:
    """Class labels and a rows × classes matrix, from a ZipMap (a list of dicts) or a tensor."""
    if isinstance(probs, list):
        if not probs:
            return [], np.empty((0, 0))
        keys = list(probs[0].keys())
        matrix = np.array([[row[k] for k in keys] for row in probs], dtype=np.float64)
        return [str(k) for k in keys], matrix
    matrix = np.asarray(probs, dtype=np.float64)
    if matrix.ndim != 2:
        raise ModelFailed(f"the probability output has shape {list(matrix.shape)}, not rows × classes")
    return _ids(labels, matrix.shape[1]), matrix

"""Minimal safetensors reader/writer (no dependency on the `safetensors` package).

Format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
  {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
   "__metadata__": {str: str}}
then the raw little-endian tensor bytes; data_offsets are relative to the end of the
header. Supported dtypes: F64, F32, F16, I64, I32, I16, I8, U8, BOOL (BF16 read only).

API:
  read(path)  -> (dict name -> numpy array, dict metadata)
  read_torch(path, dtype=None) -> (dict name -> torch tensor, metadata)
  write(path, tensors, metadata=None)   tensors: dict name -> numpy array / torch tensor
"""
import json
import struct

import numpy as np

_DT = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME = {v: k for k, v in _DT.items()}


def read(path):
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        shape = [int(s) for s in info["shape"]]
        b, e = info["data_offsets"]
        raw = buf[base + b: base + e]
        count = int(np.prod(shape)) if shape else 1
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2", count=count)
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            if dt not in _DT:
                raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
            npdt = _DT[dt]
            if len(raw) != count * npdt.itemsize:
                raise ValueError(f"{path}: tensor {name}: {len(raw)} bytes for shape {shape} {dt}")
            arr = np.frombuffer(raw, dtype=npdt, count=count)
        out[name] = arr.reshape(shape).copy()
    return out, meta


def read_torch(path, dtype=None):
    import torch
    arrs, meta = read(path)
    out = {}
    for k, a in arrs.items():
        t = torch.from_numpy(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("=")))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t
    return out, meta


def _to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    try:
        import torch
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().contiguous().numpy()
    except ImportError:
        pass
    return np.asarray(x)


def write(path, tensors, metadata=None):
    header = {}
    blobs = []
    off = 0
    for name, x in tensors.items():
        a = _to_numpy(x)
        le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
        a = np.ascontiguousarray(a, dtype=le)
        key = np.dtype(le)
        if key not in _NAME:
            raise ValueError(f"tensor {name}: unsupported dtype {a.dtype}")
        raw = a.tobytes()
        header[name] = {"dtype": _NAME[key], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # pad so the data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)

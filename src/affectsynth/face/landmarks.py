"""Face detection and the 478 FaceMesh landmarks (MediaPipe, at the edge of the pipeline).

Landmarks come back in pixels of the given image: (x, y, z) with x right, y down, z in the same scale as x,
negative towards the camera. Several faces: sorted largest first; the largest is used unless ``face_index``
says otherwise. A face too small for FaceMesh's own detector is retried on upscaled overlapping tiles.

A large photo is searched on a reduced copy (long side at most ``DETECT_SIDE``): FaceMesh looks at a
192 px crop of each face whatever the photo's size, so the full-resolution frame only costs conversion
and copying (1-2 s at 3000 px). Smaller faces the reduced copy shows too small are meshed on crops of the
original, and the tiny-face check measures the original's pixels.
"""

import contextlib
import dataclasses
import functools
import importlib
import math
import os
import sys
import threading
import types

import numpy as np

from ..errors import FaceDetectionError
from .topology import LEFT_PUPIL, NUM_LANDMARKS, RIGHT_PUPIL

MIN_INTEROCULAR_PX = 10.0
"""Below this inter-pupil distance (pixels) a face is refused as too small to edit."""

DETECT_SIDE = 1280
"""Longest side (pixels) of the copy whole-frame detection runs on; larger photos are box-filtered down by
an integer factor. A face filling a third of a 3000 px photo is still ~330 px wide there."""

_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Detection:
    """What was found: all faces (largest first), which one was chosen, and how."""

    landmarks: np.ndarray  # f32[478, 3] of the chosen face
    all_landmarks: tuple  # f32[478, 3] per face, largest first
    index: int
    upscaled: bool

    @property
    def num_faces(self) -> int:
        return len(self.all_landmarks)

    @property
    def interocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[LEFT_PUPIL, :2] - self.landmarks[RIGHT_PUPIL, :2]))

    def describe(self) -> str:
        how = " (found on an upscaled crop)" if self.upscaled else ""
        if self.num_faces == 1:
            return f"1 face{how}, inter-pupil distance {self.interocular:.0f} px"
        return (
            f"{self.num_faces} faces found; using face {self.index} "
            f"({'the largest' if self.index == 0 else 'by --face-index'}){how}"
        )


def _quiet_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while MediaPipe's C++ runs: its TFLite/absl start-up lines
    ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires ...") ignore the log-level
    variables. Python exceptions are unaffected (they are objects, printed later). AFFECTSYNTH_DEBUG=1
    keeps the lines."""
    if os.environ.get("AFFECTSYNTH_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Deferred(types.ModuleType):
    """Stands in for a module while MediaPipe imports; the first attribute read imports the real one."""

    def __getattr__(self, attr):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _import_mediapipe():
    """``import mediapipe`` without importing matplotlib: ``mediapipe.solutions.drawing_utils`` imports
    ``matplotlib.pyplot`` for a plotting helper this package never calls, which is over half of MediaPipe's
    import time (0.5-1.5 s on every ``synth``). While MediaPipe imports, ``matplotlib`` and
    ``matplotlib.pyplot`` are stand-ins that import the real modules when first used (so MediaPipe's
    plotting still works for whoever calls it); nothing is deferred when matplotlib is already imported.
    Should the stand-ins ever break MediaPipe's import, it is imported again the ordinary way."""
    if "mediapipe" in sys.modules or "matplotlib" in sys.modules:
        import mediapipe

        return mediapipe
    mpl, plt = _Deferred("matplotlib"), _Deferred("matplotlib.pyplot")
    mpl.pyplot = plt  # ``import matplotlib.pyplot as plt`` reads this attribute
    sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": plt})
    try:
        import mediapipe
    except ImportError:
        for name in [n for n in sys.modules if n == "mediapipe" or n.startswith("mediapipe.")]:
            del sys.modules[name]
        mediapipe = None
    finally:
        for name, stand_in in (("matplotlib", mpl), ("matplotlib.pyplot", plt)):
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    if mediapipe is None:
        import mediapipe
    return mediapipe


@functools.cache
def _face_mesh(max_faces: int):
    _quiet_mediapipe()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp = _import_mediapipe()

        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            refine_landmarks=True,
            max_num_faces=max_faces,
            min_detection_confidence=0.5,
        )


def _checked(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise FaceDetectionError("image", f"expected an RGB image of shape (H, W, 3), got {a.shape}")
    return a


def _as_uint8(image) -> np.ndarray:
    a = _checked(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def _reduced(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """A uint8 copy of ``image`` (H, W, 3) with long side <= ``max_side``, and the integer factor ``k`` it
    was reduced by: reduced pixel ``j`` averages original pixels ``[j k, (j + 1) k)`` (the last ``< k``
    rows/columns are dropped), so a reduced position ``x`` is ``k x`` in the original, exactly."""
    h, w = image.shape[:2]
    k = max(1, math.ceil(max(h, w) / max(int(max_side), 1)))
    if k == 1 or min(h, w) < 2 * k:
        return _as_uint8(image), 1
    hs, ws = h // k, w // k
    acc = np.zeros((hs, ws, 3), np.float32)
    for i in range(k):  # k^2 strided views summed: one small accumulator, no full-size temporaries
        for j in range(k):
            acc += image[i : hs * k : k, j : ws * k : k]
    acc *= (1.0 if image.dtype == np.uint8 else 255.0) / k**2
    np.clip(acc, 0.0, 255.0, out=acc)
    acc += 0.5
    out = acc.astype(np.uint8)  # truncates: rounded
    return out, k


def _mesh_faces(img: np.ndarray, max_faces: int) -> list:
    import warnings

    h, w = img.shape[:2]
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _native_stderr_silenced():
            res = _face_mesh(max_faces).process(img)
    out = []
    for face in res.multi_face_landmarks or ():
        out.append(np.array([[p.x * w, p.y * h, p.z * w] for p in face.landmark], np.float32))
    return [f for f in out if f.shape == (NUM_LANDMARKS, 3)]


@functools.cache
def _face_detector():
    _quiet_mediapipe()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp = _import_mediapipe()

        return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.4)


def _resize(img: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))


def _detector_boxes(img: np.ndarray) -> list:
    import warnings

    h, w = img.shape[:2]
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _native_stderr_silenced():
            res = _face_detector().process(img)
    return [
        (
            d.location_data.relative_bounding_box.xmin * w,
            d.location_data.relative_bounding_box.ymin * h,
            d.location_data.relative_bounding_box.width * w,
            d.location_data.relative_bounding_box.height * h,
        )
        for d in res.detections or ()
    ]


def _upscaled_retry(img: np.ndarray, max_faces: int) -> list:
    """Small faces: find boxes with the full-range detector on overlapping tiles, then FaceMesh on an
    upscaled crop around each box.

    MediaPipe's detectors look at a 128-192 px version of the frame, so a face that covers a few percent of
    a large photo vanishes; tiles of 1/2, 1/3, 1/4 and 1/6 of the frame (50% overlap) bring it into range.
    """
    h, w = img.shape[:2]
    for k in (1, 2, 3, 4, 6):
        th, tw = int(np.ceil(2 * h / (k + 1))), int(np.ceil(2 * w / (k + 1)))
        boxes = []
        for i in range(k):
            for j in range(k):
                top, left = min(i * th // 2, h - th), min(j * tw // 2, w - tw)
                tile = img[top : top + th, left : left + tw]
                for x0, y0, bw, bh in _detector_boxes(tile):
                    c = np.array([left + x0 + bw / 2, top + y0 + bh / 2])
                    if all(np.linalg.norm(c - b[0]) > 0.5 * max(bw, bh) for b in boxes):
                        boxes.append((c, max(bw, bh)))
        found = []
        for c, side in boxes[: max_faces * 2]:
            found += _crop_mesh(img, c, side)
        if found:
            return found
    return []


def _size(lm: np.ndarray) -> float:
    span = lm[:, :2].max(0) - lm[:, :2].min(0)
    return float(span[0] * span[1])


def _crop_mesh(img: np.ndarray, centre, side: float) -> list:
    """FaceMesh on a square crop around ``centre`` (side ``2.4 * side``), upscaled to about 384 px."""
    h, w = img.shape[:2]
    half = side * 1.2
    left, top = int(max(0, centre[0] - half)), int(max(0, centre[1] - half))
    right, bottom = int(min(w, centre[0] + half)), int(min(h, centre[1] + half))
    crop = _as_uint8(img[top:bottom, left:right])  # only the crop converted (a float photo stays float)
    if min(crop.shape[:2]) < 4:
        return []
    factor = max(1.0, 384.0 / max(crop.shape[:2]))
    big = _resize(crop, factor) if factor > 1.0 else crop
    sx, sy = crop.shape[1] / big.shape[1], crop.shape[0] / big.shape[0]
    return [
        lm * np.array([sx, sy, sx], np.float32) + np.array([left, top, 0.0], np.float32)
        for lm in _mesh_faces(big, 1)
    ]


def _covered(centre, faces) -> bool:
    for f in faces:
        lo, hi = f[:, :2].min(0), f[:, :2].max(0)
        if (lo <= centre).all() and (centre <= hi).all():
            return True
    return False


def detect_faces(image, *, max_faces: int = 8, max_side: int = DETECT_SIDE) -> tuple[list, bool]:
    """All faces' landmarks (pixels of ``image``), largest first, and whether an upscaled retry was needed.

    FaceMesh runs on the whole frame, reduced to a long side <= ``max_side`` (``_reduced``; landmarks
    scaled back); MediaPipe's full-range detector then looks there for faces FaceMesh's own detector
    missed (smaller ones), which get FaceMesh on an upscaled crop of the original; with still nothing
    found, tiles of the original.
    """
    img = _checked(image)
    small, k = _reduced(img, max_side)
    faces = [f * np.float32(k) for f in _mesh_faces(small, max_faces)]
    upscaled = False
    for x0, y0, bw, bh in _detector_boxes(small):
        centre = np.array([x0 + bw / 2, y0 + bh / 2]) * k
        if len(faces) < max_faces and not _covered(centre, faces):
            extra = _crop_mesh(img, centre, max(bw, bh) * k)
            faces += extra
            upscaled |= bool(extra)
    if not faces:
        faces = _upscaled_retry(small if k == 1 else _as_uint8(img), max_faces)
        upscaled = bool(faces)
    faces.sort(key=_size, reverse=True)
    return faces, upscaled


def detect_landmarks(
    image, *, face_index: int | None = None, source: str = "image", return_detection: bool = False
):
    """Detect one face and return its 478 landmarks in pixels, f32[478, 3].

    Args:
        image: RGB, float in [0, 1] or uint8, (H, W, 3).
        face_index: which face when there are several (0 = largest, the default).
        source: the file name used in error messages.
        return_detection: also return the ``Detection`` (all faces, choice, whether upscaled).

    Raises:
        FaceDetectionError: no face, ``face_index`` out of range, or the face is too small to edit.
    """
    faces, upscaled = detect_faces(image)
    if not faces:
        raise FaceDetectionError(source, "no face found")
    idx = 0 if face_index is None else int(face_index)
    if not 0 <= idx < len(faces):
        raise FaceDetectionError(source, f"--face-index {idx} out of range: {len(faces)} face(s) found")
    det = Detection(landmarks=faces[idx], all_landmarks=tuple(faces), index=idx, upscaled=upscaled)
    if det.interocular < MIN_INTEROCULAR_PX:
        raise FaceDetectionError(
            source,
            f"face too small: inter-pupil distance {det.interocular:.1f} px "
            f"(need >= {MIN_INTEROCULAR_PX:.0f})",
        )
    return (det.landmarks, det) if return_detection else det.landmarks

import numpy as np
import pytest
import skimage.data
from PIL import Image

from affectsynth.errors import FaceDetectionError
from affectsynth.face.landmarks import _reduced, detect_faces, detect_landmarks
from affectsynth.face.topology import LEFT_PUPIL, RIGHT_PUPIL


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def _resize(img, size):
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))


def test_astronaut_landmarks(astronaut):
    lm, det = detect_landmarks(astronaut, return_detection=True)
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert det.num_faces == 1 and not det.upscaled
    # pupils where a person sees them in this photo (x ~ 200 and ~ 245, y ~ 115), image left = subject's right
    assert 190 < lm[RIGHT_PUPIL, 0] < 215 and 230 < lm[LEFT_PUPIL, 0] < 260
    assert 100 < lm[RIGHT_PUPIL, 1] < 130
    assert (lm[:, 0] > 0).all() and (lm[:, 0] < 512).all()
    # float input gives the same answer as uint8
    lm2 = detect_landmarks(astronaut.astype(np.float32) / 255.0)
    assert np.abs(lm2 - lm).max() < 1.0


def test_small_face_found_on_upscaled_crop(astronaut):
    canvas = np.full((900, 900, 3), 120, np.uint8)
    canvas[400:528, 300:428] = _resize(astronaut, (128, 128))
    lm, det = detect_landmarks(canvas, return_detection=True)
    assert det.upscaled
    ref = detect_landmarks(astronaut) * np.array([0.25, 0.25, 0.25], np.float32) + np.array([300, 400, 0])
    iod = np.linalg.norm(ref[LEFT_PUPIL, :2] - ref[RIGHT_PUPIL, :2])
    assert np.median(np.linalg.norm(lm[:, :2] - ref[:, :2], axis=1)) < 0.25 * iod


def test_several_faces_largest_first_and_index(astronaut):
    canvas = np.full((512, 1024, 3), 110, np.uint8)
    canvas[:, :512] = astronaut
    canvas[64:448, 576:960] = _resize(astronaut, (384, 384))
    faces, _ = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0][:, 0].mean() < 512 < faces[1][:, 0].mean()  # the big one first
    lm1, det = detect_landmarks(canvas, face_index=1, return_detection=True)
    assert det.index == 1 and lm1[:, 0].mean() > 512
    assert "2 faces" in det.describe()
    with pytest.raises(FaceDetectionError, match="out of range: 2 face"):
        detect_landmarks(canvas, face_index=5, source="two.png")


def test_no_face_and_tiny_face(astronaut):
    with pytest.raises(FaceDetectionError, match="blank.png: no face found"):
        detect_landmarks(np.full((256, 256, 3), 0.5, np.float32), source="blank.png")
    canvas = np.full((600, 600, 3), 120, np.uint8)
    canvas[300:364, 300:364] = _resize(astronaut, (64, 64))
    with pytest.raises(FaceDetectionError, match="(too small|no face)"):
        detect_landmarks(canvas, source="tiny.png")


def test_reduced_copy_maps_back_exactly():
    """``_reduced``: reduced pixel j is the mean of original pixels [j k, (j + 1) k), for float and uint8."""
    rng = np.random.default_rng(0)
    img = rng.random((23, 31, 3)).astype(np.float32)
    small, k = _reduced(img, 10)
    assert k == 4 and small.shape == (5, 7, 3) and small.dtype == np.uint8
    ref = img[:20, :28].reshape(5, 4, 7, 4, 3).mean((1, 3))
    assert np.abs(small.astype(np.float64) - ref * 255).max() <= 0.5 + 1e-3
    u8 = (img * 255).astype(np.uint8)
    small8, k8 = _reduced(u8, 10)
    ref8 = u8[:20, :28].astype(np.float64).reshape(5, 4, 7, 4, 3).mean((1, 3))
    assert k8 == 4 and np.abs(small8 - ref8).max() <= 0.5 + 1e-3
    same, one = _reduced(u8, 31)
    assert one == 1 and np.array_equal(same, u8)


def test_large_photo_detected_on_reduced_copy(astronaut):
    """A 2048 px photo is searched at 1024 px (k = 2): landmarks in the original's pixels, close to the
    full-resolution search (a small fraction of the inter-pupil distance), and the tiny-face check still
    measures the original: the same face shrunk inside a large canvas is refused or found at its own size."""
    big = _resize(astronaut, (2048, 2048))
    full, _ = detect_faces(big, max_side=4096)
    red, _ = detect_faces(big, max_side=1024)
    iod = np.linalg.norm(full[0][LEFT_PUPIL, :2] - full[0][RIGHT_PUPIL, :2])
    err = np.linalg.norm(full[0][:, :2] - red[0][:, :2], axis=1)
    assert np.median(err) < 0.02 * iod and err.max() < 0.06 * iod
    assert np.abs(red[0][:, 2] - full[0][:, 2]).mean() < 0.05 * iod  # depth scaled back alike
    # a small face on a large canvas: found on a crop of the original (upscaled), in original pixels
    canvas = np.full((2600, 2600, 3), 120, np.uint8)
    canvas[1000:1192, 1000:1192] = _resize(astronaut, (192, 192))
    lm, det = detect_landmarks(canvas, return_detection=True)
    ref = detect_landmarks(astronaut) * np.float32(192 / 512) + np.array([1000, 1000, 0], np.float32)
    small_iod = np.linalg.norm(ref[LEFT_PUPIL, :2] - ref[RIGHT_PUPIL, :2])
    assert abs(det.interocular - small_iod) < 0.15 * small_iod
    assert np.median(np.linalg.norm(lm[:, :2] - ref[:, :2], axis=1)) < 0.25 * small_iod


def test_mediapipe_imported_without_matplotlib_until_used():
    """``_import_mediapipe`` defers matplotlib (MediaPipe's plotting helper needs it, detection does not);
    the helper still finds the real ``matplotlib.pyplot`` when it is used. A fresh interpreter: this test
    session may have imported either already."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from affectsynth.face.landmarks import _import_mediapipe\n"
        "mp = _import_mediapipe()\n"
        "assert 'matplotlib' not in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
        "from mediapipe.python.solutions import drawing_utils\n"
        "figure = drawing_utils.plt.figure\n"
        "import matplotlib.pyplot\n"
        "assert figure is matplotlib.pyplot.figure\n"
        "assert type(sys.modules['matplotlib']).__name__ == 'module'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]

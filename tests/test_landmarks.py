import numpy as np
import pytest
import skimage.data
from PIL import Image

from affectsynth.errors import FaceDetectionError
from affectsynth.face.landmarks import detect_faces, detect_landmarks
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

"""``synth``'s loading order (``cli.app._load_face_and_program``): the default model is loaded beside the
detection, on the program's thread (its first-ever build overlaps MediaPipe), a named model file before the
photo is searched (its errors first). Detection and the program are stand-ins here."""

import threading
import types

import numpy as np
import pytest

from affectsynth import pipeline, working
from affectsynth.affect import default as dflt
from affectsynth.cli import app
from affectsynth.face import landmarks
from affectsynth.io import save_image


@pytest.fixture
def stubs(monkeypatch, tmp_path):
    """Record which thread each step ran on, in order."""
    log: list[tuple[str, str]] = []

    def step(name):
        log.append((name, threading.current_thread().name))

    def load_model(path=None):
        step(f"model {path}")
        if path == "broken":
            raise ValueError("broken model")
        return types.SimpleNamespace(path=path)

    def detect(image, **kw):
        step("detect")
        det = types.SimpleNamespace(num_faces=1, upscaled=False)
        return np.zeros((478, 3), np.float32), det

    monkeypatch.setattr(pipeline, "load_model", load_model)

    def prepare(model, opts, batch, photo_dtypes, quick):
        assert photo_dtypes == (np.uint8,)  # the tile program of the photo as decoded, not the float one
        assert quick  # one photo: its caller waits for the compile (``compiled.QUICK_OPTIONS``)
        step(f"program {model.path}")

    monkeypatch.setattr(working, "prepare", prepare)
    monkeypatch.setattr(landmarks, "detect_landmarks", detect)
    photo = save_image(tmp_path / "face.png", np.full((16, 16, 3), 0.5, np.float32))
    # the default model counts as cached: no compile-ahead beside its build (``working.prepare_default``)
    monkeypatch.setattr(dflt, "default_model_path", lambda: photo)
    return log, photo


def _load(photo, model):
    return app._load_face_and_program(photo, None, model, None, 1, app._Stages())


def test_the_default_model_loads_on_the_program_thread(stubs):
    log, photo = stubs
    image, lm, model = _load(photo, None)
    assert model.path is None and image.shape == (16, 16, 3) and lm.shape == (478, 3)
    assert image.dtype == np.uint8  # the photo's bytes: the pipeline makes no full-size float copy
    threads = dict(log)
    assert threads["model None"] == threads["program None"] == "affectsynth-load-program"
    assert threads["detect"] == threading.main_thread().name
    assert [n for n, _ in log if n != "detect"] == ["model None", "program None"]  # model, then its program


def test_a_named_model_is_read_first_on_the_main_thread(stubs):
    log, photo = stubs
    _, _, model = _load(photo, "mine.npz")
    assert model.path == "mine.npz"
    assert log[0] == ("model mine.npz", threading.main_thread().name)


def test_a_failure_on_the_program_thread_is_raised_on_the_main_thread(stubs, monkeypatch):
    log, photo = stubs

    def broken(path=None):
        raise ValueError("broken default model")

    monkeypatch.setattr(pipeline, "load_model", broken)
    with pytest.raises(ValueError, match="broken default model"):
        _load(photo, None)
    assert ("detect", threading.main_thread().name) in log


def test_a_broken_named_model_fails_before_the_photo_is_searched(stubs):
    log, photo = stubs
    with pytest.raises(ValueError, match="broken model"):
        _load(photo, "broken")
    assert [n for n, _ in log] == ["model broken"]

"""A cheap stand-in for ``cli.bulk.Backend`` in the Ray engine's tests: no MediaPipe, no JAX compilation.

Ray's workers cannot import this file (``tests`` is not on their path), so users register it with
``ray.cloudpickle.register_pickle_by_value`` and it travels by value.
"""

import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

CLASSES = [(3, -0.5, 0.25), (7, 0.25, 0.5), (11, 0.75, -0.25)]


def face_id(source: str) -> int:
    """The number in an input's name (``p3.png`` -> 3): the fake landmarks carry it to the synth."""
    return int(re.sub(r"\D", "", Path(source).stem) or 0)


class FakeBackend:
    """``detect`` returns landmarks filled with the input's ``face_id``; ``synth`` is a per-item function of
    the image, target and key. With ``crash=(face, valence)`` the synth's process exits (as a crashed or
    killed worker would) on a batch holding that item: every time, or once if ``marker`` (a file created on
    the first crash) is given; with ``detect_crash=face`` the detector's process exits on that face.
    ``delay`` seconds per batch make a job last long enough to interrupt."""

    def __init__(
        self, crash: tuple | None = None, marker: str | None = None, delay: float = 0.0, detect_crash=None
    ):
        self.crash, self.marker, self.delay, self.detect_crash = crash, marker, delay, detect_crash

    def options(self, **kw) -> dict:
        return kw

    def detect(self, note, face_index=None):
        def run(image, source):
            if face_id(source) == self.detect_crash:
                os._exit(3)
            return np.full((478, 3), face_id(source), np.float32)

        return run

    def synth(self, model, options):
        def run(images, landmarks, targets, keys, crop):
            if self.crash is not None and self._hit(landmarks, targets):
                if self.marker is None or not Path(self.marker).exists():
                    if self.marker is not None:
                        Path(self.marker).touch()
                    os._exit(3)
            time.sleep(self.delay)
            shade = (targets[:, 0] + 1) / 4 + (keys[:, 0] % 7) / 70
            images = np.asarray(images)
            images = images / np.float32(255) if images.dtype == np.uint8 else images  # as synth reads bytes
            images = images * 0.5 + shade[:, None, None, None].astype(np.float32)
            return SimpleNamespace(images=images, fit_rms=np.full(len(images), 0.5), label=targets)

        return run

    def _hit(self, landmarks, targets) -> bool:
        face, valence = self.crash
        return bool(np.any((landmarks[:, 0, 0] == face) & np.isclose(targets[:, 0], valence)))

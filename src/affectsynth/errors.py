"""Errors with a one-line message naming the file (or item) and the problem."""


class AffectsynthError(Exception):
    """Base error. ``str(err)`` is one line: ``"<where>: <problem>"``.

    ``exit_code`` is what the CLI exits with: 2 for bad input, 3 for a missing/corrupt model, 1 otherwise.
    """

    exit_code = 1

    def __init__(self, where, problem: str):
        self.where = str(where) if where is not None else ""
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.where}: {self.problem}" if self.where else self.problem)


class InputImageError(AffectsynthError):
    """Unreadable, corrupt, unsupported or too large image."""

    exit_code = 2


class FaceDetectionError(AffectsynthError):
    """No usable face: none found, too small, or the requested index does not exist."""

    exit_code = 2


class TargetError(AffectsynthError):
    """A (valence, arousal) target that is NaN or outside [-1, 1]."""

    exit_code = 2


class OptionsError(AffectsynthError, ValueError):
    """A setting outside its documented range (e.g. a ``SynthesisOptions`` field)."""

    exit_code = 2


class ModelFileError(AffectsynthError):
    """Missing, corrupt or incompatible model file."""

    exit_code = 3


class OutputError(AffectsynthError):
    """The output cannot be written (exists without --overwrite, unwritable folder, or it is the input)."""

    exit_code = 2

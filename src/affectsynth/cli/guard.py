"""How every ``affectsynth`` command fails: one line on stderr and a documented exit code.

0 success, 1 internal error, 2 bad input (image, face, target, output path, gallery, config),
3 missing or corrupt model file, 130 interrupted. ``AFFECTSYNTH_DEBUG=1`` re-raises for the traceback.
"""

import functools
import os

import typer

from ..errors import AffectsynthError


def fail(message: str, code: int):
    """Print ``affectsynth: error: <message>`` and exit with ``code``."""
    typer.echo(f"affectsynth: error: {message}", err=True)
    raise typer.Exit(code)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def guarded(fn):
    """Wrap a command: known errors become one line and their exit code, anything else exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..affect.gallery import GalleryError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            typer.echo("affectsynth: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
            if os.environ.get("AFFECTSYNTH_DEBUG"):
                raise
            if isinstance(e, AffectsynthError):
                fail(str(e), e.exit_code)
            if isinstance(e, GalleryError | FileNotFoundError):
                fail(_one_line(e), 2)
            fail(f"internal error: {type(e).__name__}: {_one_line(e)[:300]}", 1)

    return wrapper

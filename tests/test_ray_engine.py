"""``augment --engine ray`` (issue 18): the same outputs as the local engine, and ``--resume`` across engines.

One local Ray with 2 CPUs for the module. Every Ray synthesis actor compiles the program (~30 s on 2
cores), so the module runs ONE Ray job: it finishes a job the local engine started (checking the Ray
engine's images, rows and skips against the local engine's, and resume local -> Ray), and the local engine
then finishes a job the Ray engine left (resume Ray -> local). Three London photos, a corrupt file and a
photo without a face; two classes; batch size 2.
"""

import contextlib
import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from affectsynth.cli import augment as A  # noqa: E402
from affectsynth.cli import bulk_ray as R  # noqa: E402
from affectsynth.cli.app import app  # noqa: E402
from affectsynth.cli.bulk import Backend  # noqa: E402
from affectsynth.cli.inputs import padded_shape, plan_batches, scan_inputs  # noqa: E402
from affectsynth.errors import OutputError  # noqa: E402

# ray.init forks its helper processes (fork + exec) after JAX has started: JAX warns about the fork
# (fork + exec); Ray Data's own modules warn about their deprecated settings.
pytestmark = [
    pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]
JOB = dict(per_class=1, batch_size=2, seed=7)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def job(london_dir, tmp_path_factory):
    """Inputs (3 faces, a corrupt file, a face-less image), model, 2 classes, the local engine's output."""
    d = tmp_path_factory.mktemp("ray_inputs")
    for f in sorted((london_dir / "neutral").glob("*.jpg"))[:3]:
        shutil.copy(f, d / f.name)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(d / "noface.png")
    be = Backend()
    model = be.load_model(None)
    classes = be.classes(model, True)[:2]
    opt_kw = dict(neutralize=True, sample=False, strength=1.0)
    opts = be.options(**opt_kw)
    local = dict(synth=be.synth(model, opts), detect=be.detect(lambda m: None), crop=be.crop(opts))
    out = tmp_path_factory.mktemp("ray_local")
    rep = A.run_augment(scan_inputs(d), out, classes, input_dir=d, **local, **JOB)
    assert rep.written == 6 and rep.bad_inputs == 2
    return dict(inputs=d, model=model, classes=classes, opt_kw=opt_kw, local=local, out=out)


def rows(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def skipped(out: Path) -> set:
    with open(out / "skipped.csv", newline="") as f:
        return {(r["source"], r["reason"]) for r in csv.DictReader(f)}


def cut_job(src: Path, dst: Path, keep: int) -> dict:
    """A copy of a finished job interrupted after ``keep`` rows: later rows and their images removed."""
    shutil.copytree(src, dst)
    kept = rows(src)[:keep]
    for r in rows(src)[keep:]:
        (dst / r["output"]).unlink()
    with open(dst / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(kept[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    return {r["output"]: (dst / r["output"]).stat().st_mtime_ns for r in kept}


def assert_same_job(a: Path, b: Path):
    """Same rows (same order), same file names, bit-identical pixels, same skipped inputs."""
    assert rows(a) == rows(b)
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == sorted(p.name for p in b.glob("*.png")) and len(names) == 6
    for n in names:
        assert np.array_equal(np.asarray(Image.open(a / n)), np.asarray(Image.open(b / n))), n
    assert skipped(a) == skipped(b)
    assert {s for s, _ in skipped(a)} == {"corrupt.jpg", "noface.png"}


@pytest.fixture(scope="module")
def ray_finished(job, ray_cluster, tmp_path_factory):
    """The local job cut after its first batch, finished by the Ray engine (one synthesis actor)."""
    out = tmp_path_factory.mktemp("ray_resume") / "out"
    before = cut_job(job["out"], out, keep=2)
    rep = R.run_augment_ray(
        scan_inputs(job["inputs"]),
        out,
        job["classes"],
        model=job["model"],
        options=job["opt_kw"],
        crop=job["local"]["crop"],
        input_dir=job["inputs"],
        resume=True,
        workers=1,
        **JOB,
    )
    return out, before, rep


@pytest.mark.shared
@pytest.mark.slow
def test_ray_finishes_a_local_job_with_the_same_outputs(job, ray_finished):
    out, before, rep = ray_finished
    assert (rep.already_done, rep.written, rep.bad_inputs, rep.prepared) == (2, 4, 2, 2)
    assert {(s, len(r) > 0) for s, r in rep.skipped} == {("corrupt.jpg", True), ("noface.png", True)}
    assert_same_job(job["out"], out)
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # done items were not redone


@pytest.mark.shared
@pytest.mark.slow
def test_local_finishes_a_ray_job(job, ray_finished, tmp_path):
    out = tmp_path / "out"
    before = cut_job(ray_finished[0], out, keep=4)  # 2 rows from the local engine, 2 from Ray
    rep = A.run_augment(
        scan_inputs(job["inputs"]), out, job["classes"], input_dir=job["inputs"], resume=True, **job["local"],
        **JOB,
    )  # fmt: skip
    assert (rep.already_done, rep.written) == (4, 2)
    assert_same_job(job["out"], out)
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before


@pytest.mark.shared
@pytest.mark.slow
def test_ray_resume_of_a_finished_job_does_nothing(job, ray_finished):
    out = ray_finished[0]
    rep = R.run_augment_ray(
        scan_inputs(job["inputs"]), out, job["classes"], model=job["model"], options=job["opt_kw"],
        input_dir=job["inputs"], resume=True, workers=1, **JOB,
    )  # fmt: skip
    assert (rep.already_done, rep.written, rep.batches) == (6, 0, 0)
    assert len(rows(out)) == 6


@pytest.mark.shared
@pytest.mark.slow
def test_ray_without_resume_refuses_an_existing_job(job, ray_finished):
    with pytest.raises(OutputError, match="--resume"):
        R.run_augment_ray(
            scan_inputs(job["inputs"]), ray_finished[0], job["classes"], model=job["model"],
            options=job["opt_kw"], input_dir=job["inputs"], **JOB,
        )  # fmt: skip


def test_ray_options_need_the_ray_engine(tmp_path):
    runner = CliRunner()
    for extra in (["--workers", "2"], ["--address", "auto"], ["--engine", "spark"]):
        res = runner.invoke(app, ["augment", str(tmp_path), str(tmp_path / "out"), *extra])
        assert res.exit_code == 2, res.output
        assert "--engine" in res.stderr


def _actor(out: Path, synth) -> R.SynthesisActor:
    """A synthesis actor's logic in this process (no Ray), with ``synth`` in place of the model's program."""
    actor = R.SynthesisActor.__new__(R.SynthesisActor)
    actor.synth, actor.out, actor.seed, actor.ext, actor.cache = synth, out, 3, ".png", OrderedDict()
    return actor


def test_actor_writes_its_batch_and_a_failing_batch_is_skipped_not_fatal(tmp_path):
    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)).save(photo)
    items = [A.WorkItem("p.png", photo, "p", c, 0, (0.1 * c, -0.2)) for c in (4, 9)]
    b = plan_batches(items, lambda it: padded_shape(60, 80), batch_size=2)[0]
    spec = pickle.dumps((b, {"p.png": (np.zeros((478, 3), np.float32), (60, 80))}, None))

    def synth(images, landmarks, targets, keys, crop):
        assert images.shape[0] == 2 and crop is None and keys.dtype == np.uint32
        assert images.dtype == np.uint8  # the photo's bytes, as ``affectsynth synth`` reads it; bytes back
        return SimpleNamespace(images=images // 2, fit_rms=np.full(2, 0.25), label=targets)

    out = tmp_path / "out"
    out.mkdir()
    rows, skipped, (_, t0, t1) = pickle.loads(_actor(out, synth).one(spec))
    assert t1 >= t0
    assert [r["output"] for r in rows] == ["p_c4_0.png", "p_c9_0.png"] and skipped == []
    assert [r["valence"] for r in rows] == ["0.4000", "0.9000"]
    im = np.asarray(Image.open(out / "p_c4_0.png"))
    assert im.shape == (60, 80, 3)
    assert np.abs(im.astype(int) - np.asarray(Image.open(photo)) // 2).max() <= 1

    def broken(*args):
        raise RuntimeError("device lost\nsecond line")

    rows, skipped, _ = pickle.loads(_actor(out, broken).one(spec))
    assert rows == [] and skipped == [("p.png", "synthesis failed: RuntimeError: device lost")]

    def exits(*args):
        raise SystemExit(0)  # an actor that exits on purpose is never restarted: Ray Data would hang

    rows, skipped, _ = pickle.loads(_actor(out, exits).one(spec))
    assert rows == [] and skipped == [("p.png", "synthesis failed: SystemExit: 0")]


# ------------------------------------------- fake stages (tests/ray_fakes.py): retries, chunks, GPU env


@pytest.fixture(scope="module")
def fake_inputs(tmp_path_factory):
    """Five small photos of two sizes and a corrupt file; the local engine's job over them (fake stages)."""
    import ray_fakes

    ray.cloudpickle.register_pickle_by_value(ray_fakes)
    d = tmp_path_factory.mktemp("fake_inputs")
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        im = (rng.random((48 + 100 * (i % 2), 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(im).save(d / f"p{i}.png")
    (d / "corrupt.jpg").write_bytes(b"not an image" * 8)
    out = tmp_path_factory.mktemp("fake_local")
    be = ray_fakes.FakeBackend()
    local = dict(synth=be.synth(None, {}), detect=be.detect(None), chunk_inputs=2)
    rep = A.run_augment(scan_inputs(d), out, ray_fakes.CLASSES, input_dir=d, **local, **JOB)
    assert rep.written == 15 and rep.bad_inputs == 1
    return d, out, ray_fakes


def run_fake(fake_inputs, out: Path, backend, **kw) -> A.AugmentReport:
    d, _, fakes = fake_inputs
    kw = {"workers": 2, "chunk_inputs": 2, **JOB, **kw}
    return R.run_augment_ray(
        scan_inputs(d), out, fakes.CLASSES, model=None, options={}, input_dir=d, backend=backend, **kw
    )


def assert_fake_job(a: Path, b: Path, n: int = 15, ordered: bool = True):
    key = lambda r: (r["source"], int(r["class_id"]))
    want, got = (rows(a), rows(b)) if ordered else (sorted(rows(a), key=key), sorted(rows(b), key=key))
    assert want == got and len(got) == n  # same rows (in order unless resumed), none duplicated
    names = sorted(p.name for p in b.iterdir() if p.suffix == ".png")
    assert names == sorted(r["output"] for r in rows(b))  # every image once, no temp file left
    assert not [p for p in b.iterdir() if p.name.startswith(".")]
    for r in rows(b):
        assert np.array_equal(
            np.asarray(Image.open(a / r["output"])), np.asarray(Image.open(b / r["output"]))
        )


@pytest.mark.slow
def test_ray_chunked_plan_matches_the_local_engine_and_a_killed_worker_is_retried(
    fake_inputs, ray_cluster, tmp_path
):
    _, local_out, fakes = fake_inputs
    out = tmp_path / "out"
    crash = fakes.FakeBackend(crash=(2, 0.25), marker=str(tmp_path / "crashed"))
    rep = run_fake(fake_inputs, out, crash)
    assert (tmp_path / "crashed").exists()  # the worker did die on p2's class 7 once
    assert (rep.written, rep.bad_inputs) == (15, 1)
    assert_fake_job(local_out, out)
    assert skipped(out) == skipped(local_out)


@pytest.mark.slow
def test_ray_a_batch_that_always_kills_its_worker_is_skipped_and_resume_finishes(
    fake_inputs, ray_cluster, tmp_path
):
    _, local_out, fakes = fake_inputs
    out = tmp_path / "out"
    rep = run_fake(fake_inputs, out, fakes.FakeBackend(crash=(2, 0.25)), workers=1, max_retries=1)
    lost = {s for s, r in skipped(out) if "died" in r}
    assert lost and lost <= {"p1.png", "p2.png"}  # the crashing batch (p2 c7 and its batch mate) only
    assert rep.written == 15 - 2 and len(rows(out)) == 13
    rep = run_fake(fake_inputs, out, fakes.FakeBackend(), resume=True)
    assert (rep.already_done, rep.written) == (13, 2)
    assert_fake_job(local_out, out, ordered=False)


@pytest.mark.slow
def test_ray_a_chunk_whose_detection_always_dies_is_skipped_and_resume_finishes(
    fake_inputs, ray_cluster, tmp_path
):
    """Ray Data reruns a dead task forever by default: the engine bounds it, and the driver lists the
    chunk's items (it never got a result for them) as skipped."""
    _, local_out, fakes = fake_inputs
    out = tmp_path / "out"
    rep = run_fake(fake_inputs, out, fakes.FakeBackend(detect_crash=3), workers=1, max_retries=1)
    lost = {s for s, r in skipped(out) if "detection" in r and "died 2 time(s)" in r}
    assert lost == {"p2.png", "p3.png"}  # the listing's second chunk: corrupt.jpg p1 | p2 p3 | p4 p5
    assert rep.written == 15 - 6 and len(rows(out)) == 9
    rep = run_fake(fake_inputs, out, fakes.FakeBackend(), resume=True)
    assert (rep.already_done, rep.written) == (9, 6)
    assert_fake_job(local_out, out, ordered=False)


DRIVER = """
import signal, sys
# Ctrl-C as a user's shell delivers it: a runner started in the background (``cmd &`` in a script) hands its
# children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
import ray, ray_fakes
from affectsynth.cli.bulk_ray import ray_session, run_augment_ray
from affectsynth.cli.inputs import scan_inputs
ray.cloudpickle.register_pickle_by_value(ray_fakes)
with ray_session(None, num_cpus=2):
    run_augment_ray(
        scan_inputs({inputs!r}), {out!r}, ray_fakes.CLASSES, model=None, options={{}}, input_dir={inputs!r},
        backend=ray_fakes.FakeBackend(delay=0.4), workers=1, chunk_inputs=2, batch_size=2, seed=7,
    )
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_ray_driver_killed_mid_job_then_resume_finishes_it_once(fake_inputs, ray_cluster, tmp_path, sig):
    """The driver (its own local Ray) is killed once a few batches are in; ``--resume`` on another Ray
    finishes the job: nothing recorded is redone, nothing duplicated, no temp file left."""
    d, local_out, fakes = fake_inputs
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent), inputs=str(d), out=str(out)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    labels, deadline = out / "labels.csv", time.monotonic() + 120
    try:
        while not (labels.exists() and labels.read_text().count("\n") >= 5):  # header + 2 batches
            assert proc.poll() is None and time.monotonic() < deadline, "the driver ended too early"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the driver's own Ray, if it outlived it
    before = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in A.read_manifest(out)[0]}
    assert 4 <= len(before) < 15
    rep = run_fake(fake_inputs, out, fakes.FakeBackend(), resume=True)
    assert rep.already_done == len(before) and rep.written == 15 - len(before)
    assert_fake_job(local_out, out, ordered=False)
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before


def test_chunks_of_the_listing_do_not_depend_on_what_is_left():
    keys = [f"k{i}" for i in range(7)]
    assert list(A.listing_chunks(keys, 3)) == [keys[:3], keys[3:6], keys[6:]]
    assert [k for c in A.listing_chunks(keys, 1) for k in c] == keys
    with pytest.raises(ValueError):
        list(A.listing_chunks(keys, 0))


@pytest.mark.parametrize("share", [0.0, 1.0, 2.0, 0.5, 0.25, 1 / 3])
def test_actors_sharing_a_gpu_split_its_memory(share):
    env = R.actor_runtime_env(share)
    if not 0 < share < 1:
        assert env == {}  # one actor per GPU or more (or CPU): JAX's defaults
        return
    v = env["env_vars"]
    assert v["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    fraction = float(v["XLA_PYTHON_CLIENT_MEM_FRACTION"])
    assert 0 < fraction <= share * R.JAX_GPU_FRACTION + 1e-4
    assert int(1 / share) * fraction <= R.JAX_GPU_FRACTION + 1e-3  # all actors of a GPU fit in JAX's share

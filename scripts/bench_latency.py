"""Latency of the ``affectsynth`` CLI and of a warm ``synthesize`` (issue 16), wall time of subprocesses.

Runs, each in a fresh process, with a private user cache (``AFFECTSYNTH_CACHE``) holding the default model
only (built once beforehand, reported apart), so that "first" means no compiled program on disk:

1. the first ``synth`` call (empty program and compilation caches), and in a second fresh cache the
   ``affectsynth warmup`` that ``make install`` runs and the first ``synth`` call after it;
2. later ``synth`` calls on a London photo resized to 512 / 1350 / 3000 px (medians of ``--repeats``),
   with the per-stage breakdown the CLI prints under ``AFFECTSYNTH_TIMINGS`` (startup = wall minus the
   stages: the interpreter, typer and the package's imports) and the peak resident memory;
3. ``augment`` over photos of mixed sizes: the programs it stores (one per batch size and options);
4. warm ``synthesize_batch`` in one process on a 12-Mpx photo and on a 512 px one (median of 5 after a
   first call; wall and process CPU seconds, the latter less sensitive to other jobs on the machine) and
   each run's peak memory, plus the JPEG/PNG encode of the 12-Mpx output; for float photos (the API's
   usual input) and for the photo's bytes (uint8, as ``synth`` runs it).

With ``--cold``, first (0.) the first ``synth`` call ever in an empty cache, the default model's build
included, and the call after it.

Goals (issue 16): first call <= 20 s, later calls <= 3 s, 12 Mpx within 1.5x of 512 px and < 1.5 GB.
Usage: ``python scripts/bench_latency.py [--repeats 3] [--photo PATH]``. Timings on a shared machine vary;
the CPU seconds (user + sys) are printed beside the wall time, and each measurement records the 1-minute
load average when it ended (``load``).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LONDON = REPO.parent / "shared" / "data" / "faces" / "london" / "neutral"
SIZES = (512, 1350, 3000)


def run(cmd, env, cwd=None) -> dict:
    """Run ``cmd``; its wall seconds, output and the CLI's stage timings (``AFFECTSYNTH_TIMINGS``)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err[-2000:]}")
    stages = {}
    for line in err.splitlines():
        if line.startswith("timing: "):
            for part in line[len("timing: ") :].split(", "):
                name, secs = re.fullmatch(r"(.+) ([0-9.]+) s", part).groups()
                stages[name] = float(secs)
    return {"wall": wall, "stages": stages, "stdout": out, "stderr": err}


def measured(cmd, env) -> dict:
    """``run`` under ``/usr/bin/time`` when present (peak memory of that process alone)."""
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if timer is None:
        return run(cmd, env)
    res = run([timer, "-f", "@@ %M %U %S", *cmd], env)
    m = re.search(r"@@ (\d+) ([0-9.]+) ([0-9.]+)", res["stderr"])
    res["peak_mb"] = int(m.group(1)) / 1024
    res["cpu"] = float(m.group(2)) + float(m.group(3))
    return res


def photos(src: Path, folder: Path) -> dict[int, Path]:
    from PIL import Image

    im = Image.open(src).convert("RGB")
    out = {}
    for side in (*SIZES, 3464):  # 3464^2 = 12 Mpx
        p = folder / f"photo_{side}.jpg"
        im.resize((side, side), Image.BICUBIC).save(p, quality=95)
        out[side] = p
    return out


def synth_cmd(photo: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "affectsynth.cli.app", "synth", str(photo), "-v", "0.8", "-a", "0.4"] + [
        "-o",
        str(out),
        "--overwrite",
    ]


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:  # not on this platform
        return None


def programs(cache: Path) -> set[Path]:
    """The stored programs: compiled executables, or exported programs where those cannot be stored."""
    return {*cache.glob("programs/*.xlaexe"), *cache.glob("programs/*.jaxexport")}


def summary(runs: list[dict]) -> dict:
    wall = statistics.median(r["wall"] for r in runs)
    names = list(runs[0]["stages"])
    stages = {n: statistics.median(r["stages"].get(n, 0.0) for r in runs) for n in names}
    stages["startup"] = wall - sum(stages.values())
    out = {"wall_s": round(wall, 2), "stages_s": {k: round(v, 3) for k, v in stages.items()}}
    out["load"] = load_average()
    if "peak_mb" in runs[0]:
        out["peak_mb"] = round(max(r["peak_mb"] for r in runs))
        out["cpu_s"] = round(statistics.median(r["cpu"] for r in runs), 2)
    return out


WARM = r"""
import json, resource, sys, time
import numpy as np
import affectsynth as af
from affectsynth.io import save_image
image = af.load_image(sys.argv[1], dtype=np.dtype(sys.argv[3]))
lm = af.detect_landmarks(image)
model = af.load_model()
target = np.float32([[0.8, 0.4]])
times, cpu = [], []
for _ in range(6):
    t, c = time.perf_counter(), time.process_time()
    res = af.synthesize_batch(image[None], lm[None], target, model)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
enc = {}
for ext in ("jpg", "png"):
    t = time.perf_counter()
    save_image(sys.argv[2] + "." + ext, res.images[0])
    enc[ext] = time.perf_counter() - t
print(json.dumps({"first": times[0], "warm": sorted(times[1:])[2], "warm_cpu": sorted(cpu[1:])[2],
                  "encode": enc, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def after_warmup(tmp: Path, env: dict, photo: Path) -> dict:
    """In a second fresh cache (default model copied in): ``affectsynth warmup`` as ``make install`` runs
    it, then the first ``synth`` call."""
    cache = tmp / "cache_install"
    cache.mkdir()
    for model in (tmp / "cache").glob("default_model_*.npz"):
        shutil.copy(model, cache / model.name)
    env = {**env, "AFFECTSYNTH_CACHE": str(cache)}
    warm = run([sys.executable, "-m", "affectsynth.cli.app", "warmup"], env)
    first = summary([measured(synth_cmd(photo, tmp / "o.jpg"), env)])
    return {"warmup_s": round(warm["wall"], 1), "first_synth": first}


def first_ever(tmp: Path, env: dict, photo: Path) -> dict:
    """In an empty user cache: the first ``synth`` call ever (the default model built too, beside the
    detection) and the call after it (which must find the model and the program on disk)."""
    cache = tmp / "cache_cold"
    env = {**env, "AFFECTSYNTH_CACHE": str(cache)}
    first = summary([measured(synth_cmd(photo, tmp / "o.jpg"), env)])
    second = summary([measured(synth_cmd(photo, tmp / "o.jpg"), env)])
    return {"first_synth": first, "second_synth": second, "programs": len(programs(cache))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photo", type=Path, default=LONDON / "001.jpg")
    ap.add_argument("--cold", action="store_true", help="also time the first call ever and the one after it")
    args = ap.parse_args()
    if not args.photo.is_file():
        raise SystemExit(f"{args.photo}: photo not found (pass --photo)")
    report = {}
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        env = {**os.environ, "AFFECTSYNTH_CACHE": str(cache), "AFFECTSYNTH_TIMINGS": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        env.pop("AFFECTSYNTH_PROGRAM_CACHE", None)
        pics = photos(args.photo, tmp)
        if args.cold:
            print("first synth call ever (the default model built too), then a second...", flush=True)
            report["first_ever"] = first_ever(tmp, env, pics[1350])
        print("building the default model into the private cache (not part of any timing)...", flush=True)
        t = time.perf_counter()
        run([sys.executable, "-c", "import affectsynth as af; af.load_model()"], env)
        report["model_build_s"] = round(time.perf_counter() - t, 1)

        print("first synth call (no program on disk)...", flush=True)
        report["first_call"] = summary([measured(synth_cmd(pics[1350], tmp / "o.jpg"), env)])
        report["after_warmup"] = after_warmup(tmp, env, pics[1350])
        for side in SIZES:
            print(f"later synth calls, {side} px...", flush=True)
            runs = [measured(synth_cmd(pics[side], tmp / "o.jpg"), env) for _ in range(args.repeats)]
            report[f"later_call_{side}px"] = summary(runs)

        print("augment over mixed sizes...", flush=True)
        folder = tmp / "mixed"
        folder.mkdir()
        for side in (512, 1350, 3000):
            shutil.copy(pics[side], folder / pics[side].name)
        before = programs(cache)
        cmd = [sys.executable, "-m", "affectsynth.cli.app", "augment", str(folder), str(tmp / "aug")]
        aug = run([*cmd, "--classes", "3,45", "--batch-size", "2", "--format", "jpg"], env)
        made = programs(cache) - before
        report["augment_mixed_sizes"] = {
            "wall_s": round(aug["wall"], 1),
            "photos": [512, 1350, 3000],
            "new_programs": len(made),
            "load": load_average(),
        }

        print("warm synthesize_batch, 512 px and 12 Mpx...", flush=True)
        for dtype, tag in (("float32", ""), ("uint8", "_uint8")):
            for side in (512, 3464):
                cmd = [sys.executable, "-c", WARM, str(pics[side]), str(tmp / f"enc_{side}"), dtype]
                row = json.loads(run(cmd, env)["stdout"].strip().splitlines()[-1])
                row["encode"] = {k: round(v, 3) for k, v in row["encode"].items()}
                row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                report[f"warm_{side}px{tag}"] = {**row, "load": load_average()}
            w512, w12 = report[f"warm_512px{tag}"], report[f"warm_3464px{tag}"]
            report[f"ratio_12mpx_to_512px{tag}"] = round(w12["warm"] / w512["warm"], 2)
            cpu = w12["warm_cpu"] / max(w512["warm_cpu"], 1e-9)
            report[f"cpu_ratio_12mpx_to_512px{tag}"] = round(cpu, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

import inspect

import numpy as np
import pytest

from affectsynth.affect import gallery as gal
from affectsynth.affect.gallery import GalleryError, GalleryFrame, read_gallery, write_gallery
from affectsynth.face.topology import face_topology

V = 478


def make_frames(n_seq=2, n_frames=3, seed=0):
    rng = np.random.default_rng(seed)
    tpl = face_topology().template
    out = []
    for s in range(n_seq):
        for f in range(n_frames):
            out.append(
                GalleryFrame(
                    subject=f"subj {s}",  # a space: file names must be sanitised
                    sequence=f"seq/{s}",
                    frame=f,
                    vertices=(tpl + rng.normal(0, 1, tpl.shape)).astype(np.float32),
                    valence=float(rng.uniform(-1, 1)),
                    arousal=float(rng.uniform(-1, 1)),
                    is_neutral=f == 0,
                    source="test",
                )
            )
    return out


@pytest.mark.parametrize("fmt", ["npy", "obj", "ply"])
def test_round_trip(tmp_path, fmt):
    frames = make_frames()
    assert write_gallery(tmp_path, iter(frames), fmt) == len(frames)
    bad = []
    back = list(read_gallery(tmp_path, on_bad_row=bad.append))
    assert not bad
    assert len(back) == len(frames)
    for a, b in zip(frames, back, strict=True):
        assert (a.subject, a.sequence, a.frame, a.is_neutral) == (
            b.subject,
            b.sequence,
            b.frame,
            b.is_neutral,
        )
        assert a.valence == b.valence and a.arousal == b.arousal  # repr round trip is exact
        np.testing.assert_allclose(b.vertices, a.vertices, atol=1e-4 if fmt == "obj" else 0)
        assert b.vertices.dtype == np.float32 and b.source.startswith(str(tmp_path / "gallery.csv") + ":")
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def write_csv(folder, lines):
    text = "subject,sequence,frame,mesh,valence,arousal,is_neutral\n" + "\n".join(lines) + "\n"
    (folder / "gallery.csv").write_text(text)


def test_bad_rows_reported_and_skipped(tmp_path):
    tpl = face_topology().template
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "n.npy", tpl)
    np.save(tmp_path / "m" / "a.npy", tpl + 1)
    np.save(tmp_path / "m" / "short.npy", tpl[:100])
    np.save(tmp_path / "m" / "nan.npy", np.full_like(tpl, np.nan))
    (tmp_path / "m" / "junk.ply").write_bytes(b"not a ply")
    (tmp_path.parent / "outside.npy").write_bytes(b"")
    lines = [
        "s,q,0,m/n.npy,0,0,1",  # line 2: neutral
        "s,q,1,m/a.npy,0.5,0.5,0",  # 3: good
        "s,q,2,m/missing.npy,0.5,0.5,0",  # 4: missing file
        "s,q,3,m/short.npy,0.5,0.5,0",  # 5: wrong vertex count
        "s,q,4,m/a.npy,1.5,0.5,0",  # 6: label outside
        "s,q,5,m/a.npy,nan,0.5,0",  # 7: NaN label
        "s,q,6,../outside.npy,0.1,0.1,0",  # 8: escapes the folder
        f"s,q,7,{tmp_path / 'm' / 'a.npy'},0.1,0.1,0",  # 9: absolute
        "s,q,8,m/nan.npy,0.1,0.1,0",  # 10: non-finite vertices
        "s,q,9,m/junk.ply,0.1,0.1,0",  # 11: corrupt file
        "s,q,10,m/a.npy,0.1,0.1,maybe",  # 12: bad flag
        "s,q,11,m/a.npy,0.1,0.1,1",  # 13: second neutral
        "s,r,0,m/a.npy,0.1,0.1,0",  # 14: sequence without neutral
        "s,q,x,m/a.npy,0.1,0.1,0",  # 15: bad frame number
        "s,q,12,m/a.npy,-1,1,0",  # 16: good (labels on the edges)
    ]
    write_csv(tmp_path, lines)
    bad = []
    frames = list(read_gallery(tmp_path, on_bad_row=bad.append))
    assert [f.frame for f in frames] == [0, 1, 12]
    lines_reported = sorted(b.line for b in bad)
    assert lines_reported == list(range(4, 16))
    for b in bad:
        assert str(b).startswith(f"{tmp_path / 'gallery.csv'}:{b.line}: ") and "\n" not in str(b)


def test_neutral_yielded_first_any_order(tmp_path):
    frames = make_frames(n_seq=2, n_frames=3)
    write_gallery(tmp_path, reversed(frames))  # neutrals listed last
    out = list(read_gallery(tmp_path))
    seen = set()
    for f in out:
        key = (f.subject, f.sequence)
        assert f.is_neutral or key in seen
        if f.is_neutral:
            seen.add(key)
    assert len(out) == len(frames)


def test_unusable_neutral_skips_sequence(tmp_path):
    tpl = face_topology().template
    np.save(tmp_path / "a.npy", tpl)
    write_csv(tmp_path, ["s,q,0,gone.npy,0,0,1", "s,q,1,a.npy,0.3,0.3,0", "t,q,0,a.npy,0,0,1"])
    bad = []
    out = list(read_gallery(tmp_path, on_bad_row=bad.append))
    assert [(f.subject, f.frame) for f in out] == [("t", 0)]
    assert sorted(b.line for b in bad) == [2, 3]


def test_streaming_is_lazy(tmp_path, monkeypatch):
    write_gallery(tmp_path, make_frames(n_seq=3, n_frames=4))
    calls = []
    real = gal.load_mesh_vertices
    monkeypatch.setattr(gal, "load_mesh_vertices", lambda *a: calls.append(a) or real(*a))
    it = read_gallery(tmp_path)
    assert inspect.isgenerator(it) and not calls
    next(it)
    next(it)
    assert len(calls) == 2  # one mesh read per frame, on demand


def test_whole_gallery_errors(tmp_path):
    with pytest.raises(GalleryError, match="not found"):
        list(read_gallery(tmp_path))
    (tmp_path / "gallery.csv").write_text("subject,sequence,frame,mesh\n")
    with pytest.raises(GalleryError, match="valence"):
        list(read_gallery(tmp_path))


def test_num_vertices_none_takes_first(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 3), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((6, 3), np.float32))
    write_csv(tmp_path, ["s,q,0,a.npy,0,0,1", "s,q,1,b.npy,0,0,0", "s,q,2,a.npy,0,0,0"])
    bad = []
    out = list(read_gallery(tmp_path, num_vertices=None, on_bad_row=bad.append))
    assert [f.frame for f in out] == [0, 2] and [b.line for b in bad] == [3]


def test_write_rejects_format(tmp_path):
    with pytest.raises(ValueError):
        write_gallery(tmp_path, [], "stl")

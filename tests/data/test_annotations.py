"""Annotation readers: each format, and malformed lines named by file and line."""

import json

import pytest

from tubemask.data import AnnotationError, read_hmdb51, read_kinetics_csv, read_list_file, read_ssv2, read_ucf101


def test_list_file_forms(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("a/x.mp4 3\nb/y.mp4 120 -1\n\nc/z.mp4\n")
    recs = read_list_file(f, root=tmp_path)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in recs] == [
        ("a/x.mp4", 3),
        ("b/y.mp4", None),
        ("c/z.mp4", None),
    ]
    f.write_text("a.mp4 1\nb.mp4 one\n")
    with pytest.raises(AnnotationError, match=r"train.csv:2: label 'one'"):
        read_list_file(f)


def test_ucf101_official_layout(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 2\nApplyEyeMakeup/v_A_g09_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    train = read_ucf101(tmp_path, split=1)
    assert [r.label for r in train] == [1, 0]
    assert train[0].path == tmp_path / "UCF-101" / "Archery" / "v_Archery_g08_c01.avi"
    assert read_ucf101(tmp_path, split=1, train=False)[0].label == 1
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 2\nArchery/v_b.avi 1\n")
    with pytest.raises(AnnotationError, match=r"trainlist01.txt:2: label 1 disagrees"):
        read_ucf101(tmp_path)
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\nBowling/v_x.avi\n")
    with pytest.raises(AnnotationError, match=r"testlist01.txt:2: class folder 'Bowling'"):
        read_ucf101(tmp_path, train=False)
    with pytest.raises(ValueError, match="splits 1, 2, 3"):
        read_ucf101(tmp_path, split=4)


def test_synthetic_layout_is_read_by_ucf101_reader(synthetic_root):
    train, test = read_ucf101(synthetic_root, split=2), read_ucf101(synthetic_root, split=2, train=False)
    assert len(train) + len(test) == 30 and {r.label for r in train} == set(range(10))
    assert all(r.path.is_file() and r.path.suffix == ".avi" for r in train + test)


def test_hmdb51_splits(tmp_path):
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "cartwheel_test_split1.txt").write_text("d.avi 1 \n")
    train = read_hmdb51(tmp_path / "videos", tmp_path, split=1)
    assert [(r.path.name, r.path.parent.name, r.label) for r in train] == [
        ("a.avi", "brush_hair", 0),
        ("d.avi", "cartwheel", 1),
    ]
    assert [r.path.name for r in read_hmdb51(tmp_path, tmp_path, train=False)] == ["b.avi"]
    (tmp_path / "cartwheel_test_split1.txt").write_text("d.avi 1\ne.avi 3\n")
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split1.txt:2"):
        read_hmdb51(tmp_path, tmp_path)
    with pytest.raises(AnnotationError, match="_test_split2.txt"):
        read_hmdb51(tmp_path, tmp_path, split=2)


def test_ssv2_json(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Putting something on a surface": "0", "Pushing something": "1"}))
    entries = [
        {"id": "78687", "template": "Pushing [something]", "label": "pushing a pen", "placeholders": ["a pen"]},
        {"id": "42326", "template": "Putting [something] on a surface", "label": "x", "placeholders": ["x"]},
    ]
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(entries))
    recs = read_ssv2(tmp_path, tmp_path / "videos")
    assert [(r.path.name, r.label) for r in recs] == [("78687.webm", 1), ("42326.webm", 0)]
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps([{"id": "1", "template": "Jumping"}]))
    with pytest.raises(AnnotationError, match=r"validation.json:1: template 'Jumping'"):
        read_ssv2(tmp_path, tmp_path, subset="validation")


def test_kinetics_csv_nested_and_flat(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("label,youtube_id,time_start,time_end,split\nabseiling,--33Lscn6sk,4,14,train\nzumba,abc,0,10,train\n")
    (tmp_path / "train" / "abseiling").mkdir(parents=True)
    recs = read_kinetics_csv(f, tmp_path)
    assert recs[0].path == tmp_path / "train" / "abseiling" / "--33Lscn6sk_000004_000014.mp4"
    assert recs[1].path == tmp_path / "abc_000000_000010.mp4" and [r.label for r in recs] == [0, 1]
    assert read_kinetics_csv(f, tmp_path, layout="nested")[1].path.parent.name == "zumba"
    f.write_text("label,youtube_id,time_start,time_end,split\nzumba,abc,zero,10,train\n")
    with pytest.raises(AnnotationError, match=r"train.csv:2: time_start 'zero'"):
        read_kinetics_csv(f, tmp_path)
    f.write_text("youtube_id,label\n")
    with pytest.raises(AnnotationError, match=r"train.csv:1: expected the header"):
        read_kinetics_csv(f, tmp_path)

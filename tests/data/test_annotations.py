"""Annotation readers: each format, and malformed lines named by file and line."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _ucf(tmp_path, class_ind="1 Archery\n", train="Archery/v_a.avi 1\n"):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    (lists / "classInd.txt").write_text(class_ind)
    (lists / "trainlist01.txt").write_text(train)
    return lambda: read_ucf101(tmp_path)


def _ssv2(tmp_path, labels='{"Pushing something": "0"}', entries='[{"id": "1", "template": "Pushing [something]"}]'):
    (tmp_path / "labels.json").write_text(labels)
    (tmp_path / "something-something-v2-train.json").write_text(entries)
    return lambda: read_ssv2(tmp_path, tmp_path)


def _kinetics(tmp_path, body, classes=None):
    f = tmp_path / "train.csv"
    f.write_text("label,youtube_id,time_start,time_end,split\n" + body)
    return lambda: read_kinetics_csv(f, tmp_path, classes=classes)


def _list_file(tmp_path, text):
    f = tmp_path / "train.txt"
    f.write_text(text)
    return lambda: read_list_file(f)


BAD_ANNOTATIONS = {  # name: (reader built on tmp_path, error type, message naming the file, line and value)
    "list file missing": (lambda d: lambda: read_list_file(d / "nope.txt"), FileNotFoundError, r"nope.txt does not"),
    "list file 4 fields": (
        lambda d: _list_file(d, "a.mp4 1\na.mp4 1 2 3\n"),
        AnnotationError,
        r"train.txt:2: expected 'path \[num_frames\] label', got 4 fields",
    ),
    "list file frame count": (
        lambda d: _list_file(d, "a.mp4 many 2\n"),
        AnnotationError,
        r"train.txt:1: num_frames 'many' is not an integer",
    ),
    "ucf101 classInd line": (lambda d: _ucf(d, class_ind="1\n"), AnnotationError, r"classInd.txt:1: expected 'index"),
    "ucf101 classInd index": (lambda d: _ucf(d, class_ind="one Archery\n"), AnnotationError, r"classInd.txt:1: class"),
    "ucf101 train line": (
        lambda d: _ucf(d, train="Archery/v_a.avi 1\nArchery/v_b.avi\n"),
        AnnotationError,
        r"trainlist01.txt:2: expected 'Class/v_x.avi label', got 'Archery/v_b.avi'",
    ),
    "ucf101 no folder": (lambda d: _ucf(d, train="v_a.avi 1\n"), AnnotationError, r"trainlist01.txt:1: class folder"),
    "ucf101 missing lists": (lambda d: lambda: read_ucf101(d), FileNotFoundError, r"classInd.txt does not exist"),
    "ssv2 subset": (lambda d: lambda: read_ssv2(d, d, subset="test"), ValueError, r"subset='test'"),
    "ssv2 labels missing": (lambda d: lambda: read_ssv2(d, d), FileNotFoundError, r"labels.json does not exist"),
    "ssv2 labels invalid json": (lambda d: _ssv2(d, labels='{"a": 1,\n'), AnnotationError, r"labels.json:2: invalid"),
    "ssv2 labels not an object": (lambda d: _ssv2(d, labels='["a"]'), AnnotationError, r"labels.json: expected a JSON"),
    "ssv2 label not an int": (
        lambda d: _ssv2(d, labels='{"Pushing something": "zero"}'),
        AnnotationError,
        r"labels.json: label of 'Pushing something' 'zero' is not an integer",
    ),
    "ssv2 entries not a list": (
        lambda d: _ssv2(d, entries='{"id": "1"}'),
        AnnotationError,
        r"v2-train.json: expected a JSON list",
    ),
    "ssv2 entry without id": (
        lambda d: _ssv2(d, entries='[{"id": "1", "template": "Pushing [something]"}, {"template": "x"}]'),
        AnnotationError,
        r"v2-train.json:2: entry 2 lacks 'id'",
    ),
    "ssv2 template not a string": (
        lambda d: _ssv2(d, entries='[{"id": "1", "template": 7}]'),
        AnnotationError,
        r"v2-train.json:1: entry 1 lacks 'id' or a 'template' string",
    ),
    "kinetics missing": (lambda d: lambda: read_kinetics_csv(d / "k.csv", d), FileNotFoundError, r"k.csv does not"),
    "kinetics layout": (lambda d: lambda: read_kinetics_csv(d / "k.csv", d, layout="deep"), ValueError, r"'deep'"),
    "kinetics short row": (
        lambda d: _kinetics(d, "zumba,abc,0,10,train\n\nzumba,abc,0\n"),
        AnnotationError,
        r"train.csv:4: expected 5 fields, got 3",
    ),
    "kinetics unknown label": (
        lambda d: _kinetics(d, "zumba,abc,0,10,train\n", classes=["abseiling"]),
        AnnotationError,
        r"train.csv:2: label 'zumba' is not one of the 1 classes",
    ),
    "kinetics end time": (
        lambda d: _kinetics(d, "zumba,abc,0,ten,train\n"),
        AnnotationError,
        r"train.csv:2: time_end 'ten' is not an integer",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ANNOTATIONS))
def test_bad_annotation_names_its_file_line_and_value(tmp_path, case):
    build, error, message = BAD_ANNOTATIONS[case]
    read = build(tmp_path)
    with pytest.raises(error, match=message):
        read()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_./-]{1,20}\.(mp4|avi|webm)", fullmatch=True),
            st.none() | st.integers(0, 400),  # num_frames column (the VideoMAE pretraining lists)
            st.none() | st.integers(0, 1000),  # label; None writes -1 or leaves the column out
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_list_file_reads_back_what_was_written(tmp_path_factory, rows, minus_one):
    lines = []
    for path, num_frames, label in rows:
        fields = [path] + ([str(num_frames)] if num_frames is not None else [])
        if label is not None or num_frames is not None or minus_one:
            fields.append(str(label if label is not None else -1))
        lines.append(" \t".join(fields))
    f = tmp_path_factory.mktemp("lists") / "list.txt"
    f.write_text("\n".join(lines) + "\n")
    records = read_list_file(f, root="/data")
    assert [(r.path, r.label) for r in records] == [(Path("/data") / path, label) for path, _, label in rows]

"""perface.labels: the one reader of labels CSVs (rank --labels, eval attributes, --identities,
--group-by), on hand-written files."""

from __future__ import annotations

import pytest

from perface.labels import read_labels


def test_rows_columns_and_keys_as_written(tmp_path):
    path = tmp_path / "labels.csv"
    # a byte-order mark (Excel), CRLF line ends, spaces around names and values, an empty cell,
    # a row without a file name (dropped) and a short row (missing cells read as empty)
    path.write_bytes("\ufefffile , gender,age\r\na.jpg, f ,young\r\n,m,old\r\nsub/b.jpg,m,\r\nc.jpg,f\r\n".encode())
    labels = read_labels(path)
    assert labels.key == "file" and labels.columns == ["gender", "age"]
    assert labels.keys() == ["a.jpg", "sub/b.jpg", "c.jpg"]
    assert labels.rows == [
        {"file": "a.jpg", "gender": "f", "age": "young"},
        {"file": "sub/b.jpg", "gender": "m", "age": ""},
        {"file": "c.jpg", "gender": "f", "age": ""},
    ]


def test_key_names_in_order_and_first_column_fallback(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("id,tripletId,kind\n1,t0001,swap\n2,t0002,real\n")
    assert read_labels(path, ("tripletId", "id")).keys() == ["t0001", "t0002"]
    assert read_labels(path, ("tripletId", "id")).columns == ["id", "kind"]
    photos = tmp_path / "photos.csv"
    photos.write_text("photo,gender\na.jpg,f\n")
    assert read_labels(photos, first_column_is_key=True).keys() == ["a.jpg"]
    with pytest.raises(ValueError, match=r"has no column 'file'; its columns are \['photo', 'gender'\]"):
        read_labels(photos)


def test_missing_required_column_and_empty_file_are_named(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("file,person\na.jpg,x\n")
    with pytest.raises(ValueError, match=r"ids\.csv has no column 'identity'; its columns are \['file', 'person'\]"):
        read_labels(path, required=("identity",))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty; it needs a header row"):
        read_labels(empty)
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.csv")

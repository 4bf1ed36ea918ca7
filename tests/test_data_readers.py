"""Streaming readers: however a file is cut into work units, every record comes back once, in file order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data.readers import plan_units, read_unit
from trainer.data.sources import DataError

TEXTS = ["first", "a paragraph\nover two lines", "  padded  ", "x" * 300, "ünïcode ✓", "last one"]


def read_all(builder: str, path: Path, unit_bytes: int, batch: int = 2) -> list:
    units = plan_units(builder, [path], unit_bytes, "data.train")
    records = [r for u in units for chunk in read_unit(builder, path, u, batch, "data.train", "text") for r in chunk]
    return records, len(units)


def write_txt(path: Path) -> Path:
    # blank runs of several lines, a trailing blank, a paragraph of two lines, a CRLF blank line
    text = "\n\n\n".join(TEXTS[:3]) + "\n\n" + TEXTS[3] + "\r\n\r\n" + "\n\n".join(TEXTS[4:]) + "\n\n"
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("unit_bytes", [1, 2, 3, 7, 16, 50, 1 << 20])
def test_jsonl_and_txt_units_cut_anywhere_give_each_record_once(tmp_path, unit_bytes):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" + ("\n" if i == 2 else "") for i, t in enumerate(TEXTS)))
    records, units = read_all("json", jsonl, unit_bytes)
    assert [r["text"] for r in records] == TEXTS
    assert units == -(-jsonl.stat().st_size // unit_bytes)
    records, _ = read_all("text", write_txt(tmp_path / "a.txt"), unit_bytes)
    assert [r["text"] for r in records] == [t.strip() for t in TEXTS]  # paragraphs stripped, inner breaks kept


def test_every_cut_of_a_txt_file_agrees_with_reading_it_whole(tmp_path):
    path = write_txt(tmp_path / "a.txt")
    whole, _ = read_all("text", path, 1 << 20)
    size = path.stat().st_size
    for cut in range(1, size):  # two units, split at every byte
        from trainer.data.readers import Unit

        units = [Unit(0, 0, cut, cut), Unit(0, cut, size, size - cut)]
        parts = [r for u in units for chunk in read_unit("text", path, u, 10, "k", "text") for r in chunk]
        assert parts == whole, cut


def test_json_array_file_is_decoded_object_by_object(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(" [\n" + ",\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n]\n")
    records, units = read_all("json", path, 10)  # one unit whatever the size: an array cannot be cut
    assert [r["text"] for r in records] == TEXTS and units == 1
    from trainer.data import readers

    decoded = list(readers._json_array(path, "k", block=7))  # objects straddle the read blocks
    assert [r["text"] for r in decoded] == TEXTS
    path.write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(DataError, match=r"^k: cannot read .*a.json: invalid JSON array"):
        list(readers._json_array(path, "k", block=4))


def test_parquet_units_are_runs_of_row_groups_read_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": TEXTS * 5, "other": list(range(30))}), path, row_group_size=4)
    records, units = read_all("parquet", path, 1)
    assert [r["text"] for r in records] == TEXTS * 5 and units == 8  # one row group a unit
    assert set(records[0]) == {"text"}  # only the field is read
    records, units = read_all("parquet", path, 1 << 20, batch=7)
    assert [r["text"] for r in records] == TEXTS * 5 and units == 1


def test_a_broken_line_is_named_with_its_file_and_offset(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"^data.train: cannot read .*b.jsonl: invalid JSON at byte 14"):
        read_all("json", path, 1 << 20)


def test_a_corrupt_parquet_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"^data.train: cannot read .*bad.parquet: ") as raised:
        read_all("parquet", path, 1 << 20)
    assert len(raised.value.problems) == 1 and "\n" not in raised.value.problems[0]
    from trainer.data.readers import Unit

    with pytest.raises(DataError, match=r"^k: cannot read .*bad.parquet: "):  # planned before it went bad
        list(read_unit("parquet", path, Unit(0, 0, 1, 1), 10, "k", "text"))


def test_a_json_array_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"text": "café"}]'.encode("latin-1"))
    message = r"^data.train: cannot read .*latin1.json: 'utf-8' codec can't decode"
    with pytest.raises(DataError, match=message) as raised:
        read_all("json", path, 1 << 20)
    assert "\n" not in raised.value.problems[0]


def test_a_missing_file_is_a_read_error_not_a_data_error(tmp_path):
    from trainer.data.readers import DataReadError, Unit

    with pytest.raises(DataReadError, match=r"^k: cannot read .*gone.jsonl: No such file or directory$"):
        list(read_unit("json", tmp_path / "gone.jsonl", Unit(0, 0, 10, 10), 10, "k", "text"))


@pytest.mark.parametrize(("text", "expected"), [("", False), (" \n\n ", False), ("[]", False), (" [ \n ] ", False),
                                                ('[{"text": "a"}]', True), ('\n{"text": "a"}\n', True)])
def test_preflight_sees_records_from_the_first_bytes(tmp_path, text, expected):
    from trainer.training import preflight

    path = tmp_path / "a.json"
    path.write_text(text)
    assert preflight._has_records(path, "k") is expected


def test_preflight_reads_a_prefix_of_a_one_line_json_array(tmp_path):
    import tracemalloc

    from trainer.training import preflight

    path = tmp_path / "minified.json"
    path.write_text('[{"text": "' + "a" * 20_000_000 + '"}]')  # one 20 MB line
    tracemalloc.start()
    assert preflight._has_records(path, "k")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_preflight_names_a_file_it_cannot_read(tmp_path):
    from trainer.training import preflight

    path = tmp_path / "bad.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"^train.data.train: cannot read .*bad.parquet: "):
        preflight._has_records(path, "train.data.train")

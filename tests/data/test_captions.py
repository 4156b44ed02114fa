import json
import re

import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data import DataError, build_source


def make_images(save_image, folder, n):
    for i in range(n):
        save_image(folder / "imgs" / f"{i}.png", (i * 10, 0, 0))


def test_csv_pairs_with_relative_paths_and_holdout(tmp_path, save_image):
    make_images(save_image, tmp_path, 12)
    rows = "".join(f'imgs/{i}.png,"caption, number {i}"\n' for i in range(12))
    (tmp_path / "caps.csv").write_text("filepath,caption\n" + rows)
    source = build_source(f"captions:{tmp_path / 'caps.csv'}", image_size=8)
    assert source.kind == "pair" and source.num_samples == 11
    assert len(source.test) == 1 and source.test[0]["text"] == "caption, number 9"
    sample = source.train[3]
    assert set(sample) == {"image", "text", "label"}
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.uint8
    assert sample["text"] == "caption, number 3" and sample["label"] == -1
    assert int(sample["image"][0, 0, 0]) == 30  # the right image file for the row
    batch = next(iter(DataLoader(source.train, batch_size=4)))
    assert batch["text"] == [f"caption, number {i}" for i in range(4)]


def test_jsonl_with_absolute_paths_and_labels(tmp_path, save_image):
    make_images(save_image, tmp_path, 3)
    lines = [
        json.dumps({"image": str(tmp_path / "imgs" / f"{i}.png"), "text": f"t{i}", "label": i})
        for i in range(3)
    ]
    path = tmp_path / "sub" / "caps.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    source = build_source(f"captions:{path}")
    assert [source.train[i]["text"] for i in range(3)] == ["t0", "t1", "t2"]
    assert [source.train[i]["label"] for i in range(3)] == [0, 1, 2]
    assert source.test is None


def test_csv_missing_columns_named(tmp_path):
    (tmp_path / "c.csv").write_text("file,description\na.png,x\n")
    with pytest.raises(DataError, match="c.csv.*image/filepath/path.*caption/text.*'file'"):
        build_source(f"captions:{tmp_path / 'c.csv'}")


def test_jsonl_missing_key_left_out_and_named_with_line(tmp_path, save_image):
    make_images(save_image, tmp_path, 1)
    path = tmp_path / "c.jsonl"
    path.write_text('{"image": "imgs/0.png", "caption": "ok"}\n{"image": "imgs/0.png"}\n')
    source = build_source(f"captions:{path}")
    assert len(source.train) == 1
    assert len(source.faults) == 1 and re.search("c.jsonl, line 2.*caption key", source.faults[0])


def test_invalid_json_named(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="no usable data rows.*c.jsonl, line 1: invalid JSON"):
        build_source(f"captions:{path}")


def test_missing_image_left_out_and_named(tmp_path, save_image):
    make_images(save_image, tmp_path, 1)
    (tmp_path / "c.csv").write_text("image,text\nimgs/0.png,a\nimgs/404.png,b\n")
    source = build_source(f"captions:{tmp_path / 'c.csv'}")
    assert [source.train[i]["text"] for i in range(len(source.train))] == ["a"]
    assert re.search("line 3: image .*404.png does not exist", source.faults[0])


def test_broken_quoting_costs_one_row_and_keeps_the_split(tmp_path, save_image):
    make_images(save_image, tmp_path, 1)
    rows = [f"imgs/0.png,caption {i}\n" for i in range(20)]
    rows[2] = 'imgs/0.png,"unclosed quote\n'
    rows[4] = "imgs/0.png,three,fields\n"
    (tmp_path / "c.csv").write_text("image,text\n" + "".join(rows))
    source = build_source(f"captions:{tmp_path / 'c.csv'}")
    assert len(source.faults) == 2
    assert "line 4: bad CSV quoting" in source.faults[0]
    assert "line 6: 3 fields where the header has 2" in source.faults[1]
    # Rows 9 and 19 stay the test split although rows before them were left out.
    assert [source.test[i]["text"] for i in range(2)] == ["caption 9", "caption 19"]


def test_empty_caption_named(tmp_path, save_image):
    make_images(save_image, tmp_path, 1)
    (tmp_path / "c.csv").write_text("image,text\nimgs/0.png,\n")
    with pytest.raises(DataError, match="no usable data rows.*c.csv, line 2: empty caption"):
        build_source(f"captions:{tmp_path / 'c.csv'}")


def test_zero_byte_image_named_at_build(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    (tmp_path / "c.csv").write_text("path,caption\nz.png,zero\n")
    with pytest.raises(DataError, match="z.png is empty"):
        build_source(f"captions:{tmp_path / 'c.csv'}")


def test_undecodable_image_named_on_access(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    (tmp_path / "c.csv").write_text("path,caption\nbad.jpg,broken\n")
    source = build_source(f"captions:{tmp_path / 'c.csv'}")
    with pytest.raises(DataError, match="bad.jpg"):
        source.train[0]


def test_missing_file_named(tmp_path):
    with pytest.raises(DataError, match="nothing.csv.*does not exist"):
        build_source(f"captions:{tmp_path / 'nothing.csv'}")


def test_header_only_named(tmp_path):
    (tmp_path / "c.csv").write_text("image,caption\n")
    with pytest.raises(DataError, match="c.csv has no usable data rows"):
        build_source(f"captions:{tmp_path / 'c.csv'}")


def test_captions_keep_unicode_line_separators_and_tsv_quotes_are_text(tmp_path, save_image):
    make_images(save_image, tmp_path, 3)
    (tmp_path / "c.csv").write_text(
        "image,caption\nimgs/0.png,one\u2028line\nimgs/1.png,two\x85three\nimgs/2.png,x\n",
        encoding="utf-8",
    )
    source = build_source(f"captions:{tmp_path / 'c.csv'}", image_size=8)
    assert [source.train[i]["text"] for i in range(3)] == ["one\u2028line", "two\x85three", "x"]
    assert not source.faults
    (tmp_path / "c.tsv").write_text(
        'image\tcaption\nimgs/0.png\t"Hi" she said\nimgs/1.png\t"unclosed\nimgs/2.png\tplain\n'
    )
    source = build_source(f"captions:{tmp_path / 'c.tsv'}", image_size=8)
    texts = [source.train[i]["text"] for i in range(3)]
    assert texts == ['"Hi" she said', '"unclosed', "plain"] and not source.faults

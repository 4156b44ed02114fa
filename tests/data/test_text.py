import pytest
from torch.utils.data import DataLoader

from selfsup.data import DataError, build_source
from selfsup.data.text import TextDataset, iter_documents, uses_blank_lines


def texts(dataset):
    return [s["text"] for s in dataset]


def test_one_document_per_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n\nfirst doc\n  second doc  \nthird doc\n\n\n")
    assert not uses_blank_lines(str(path))  # leading/trailing blank lines do not count
    assert list(iter_documents(str(path))) == ["first doc", "second doc", "third doc"]
    path.write_text("first doc\nsecond doc\n\nthird doc\n")
    assert uses_blank_lines(str(path))  # one blank line between documents switches the rule


def test_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "paras.txt"
    path.write_text("A title\nline two of A\n\n   \nB only\n\n\nC one\nC two\n")
    assert list(iter_documents(str(path))) == ["A title\nline two of A", "B only", "C one\nC two"]


def test_rule_is_decided_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("x1\nx2\n")
    (tmp_path / "b.txt").write_text("y1\ny2\n\ny3\n")
    (tmp_path / "ignored.md").write_text("not text source\n")
    source = build_source(f"text:{tmp_path}", shuffle_buffer=0)
    assert source.kind == "text" and source.classes is None
    assert texts(source.train) == ["x1", "x2", "y1\ny2", "y3"]
    assert source.num_samples == 4 and source.test is None  # fewer than 20 docs per file


def test_every_twentieth_document_is_held_out(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"doc {i}\n" for i in range(45)))
    source = build_source(f"text:{path}", shuffle_buffer=0)
    assert texts(source.test) == ["doc 19", "doc 39"]
    assert texts(source.train) == [f"doc {i}" for i in range(45) if i not in (19, 39)]
    assert source.num_samples == 43


def test_glob_and_streaming_workers(tmp_path):
    for f in range(3):
        (tmp_path / f"part{f}.txt").write_text("".join(f"f{f} d{i}\n" for i in range(10)))
    source = build_source(f"text:{tmp_path}/part*.txt", shuffle_buffer=4)
    loader = DataLoader(source.train, batch_size=4, num_workers=2)
    seen = [t for batch in loader for t in batch["text"]]
    assert sorted(seen) == sorted(f"f{f} d{i}" for f in range(3) for i in range(10))


def test_shuffle_deterministic_per_epoch(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("".join(f"doc {i}\n" for i in range(60)))
    dataset = build_source(f"text:{path}", shuffle_buffer=16, seed=3).train
    dataset.set_epoch(0)
    first = texts(dataset)
    assert first == texts(dataset)
    dataset.set_epoch(1)
    assert texts(dataset) != first and sorted(texts(dataset)) == sorted(first)


def test_invalid_utf8_is_replaced_not_fatal(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert texts(TextDataset([str(path)])) == ["caf\ufffd au lait"]


def test_missing_path_named(tmp_path):
    with pytest.raises(DataError, match="corpus.txt.*does not exist"):
        build_source(f"text:{tmp_path / 'corpus.txt'}")


def test_directory_without_txt_named(tmp_path):
    (tmp_path / "a.md").write_text("hello")
    with pytest.raises(DataError, match=f"{tmp_path}.*no \\*.txt"):
        build_source(f"text:{tmp_path}")


def test_only_empty_documents_named(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\n")
    with pytest.raises(DataError, match="blank.txt.*no non-empty documents"):
        build_source(f"text:{path}")


def test_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefffirst doc\nsecond doc\n".encode())
    assert list(iter_documents(str(path))) == ["first doc", "second doc"]

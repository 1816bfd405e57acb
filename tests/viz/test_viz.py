"""viz: the numbers behind the pictures (attention maps, PCA colours, smoothing) against
independent NumPy references, and every plotting function writes a PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import viz
from minitransformer.models import VisionTransformer, ViTConfig
from minitransformer.viz._figure import image_hwc, show_image
from tests import cupy_standin

PNG = b"\x89PNG\r\n\x1a\n"


def _vit(device):
    mt.manual_seed(0)
    return VisionTransformer(ViTConfig.preset("vit-nano")).to(device)  # 32 px, patch 8, 2 heads


def test_cls_attention_maps_are_the_cls_row_renormalised(device, rng):
    model = _vit(device)
    x = rng.random((3, 3, 32, 32)).astype(np.float32)
    maps = viz.cls_attention_maps(model, x, batch=2)  # two chunks
    assert maps.shape == (3, 2, 4, 4)
    with mt.no_grad():
        probs = model.get_last_selfattention(mt.tensor(x, device=device)).numpy()
    ref = probs[:, :, 0, 1:]  # (B, heads, N): CLS query, patch keys
    ref = ref / ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(maps.reshape(3, 2, 16), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-6)


def test_cls_attention_maps_skip_register_keys(rng):
    """With DINOv2 registers the map is the CLS row over the patch keys only: the first
    1 + R keys (CLS and registers) are dropped, not just the first."""
    mt.manual_seed(0)
    model = VisionTransformer(ViTConfig.preset("vit-nano", num_register_tokens=3))
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    maps = viz.cls_attention_maps(model, x)
    with mt.no_grad():
        probs = model.get_last_selfattention(mt.tensor(x)).numpy()  # (B, heads, 4+N, 4+N)
    assert probs.shape[-1] == 1 + 3 + 16
    ref = probs[:, :, 0, 4:]  # (B, heads, N): CLS query, patch keys after the 3 registers
    ref = ref / ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(maps.reshape(2, 2, 16), ref, rtol=1e-5, atol=1e-7)


def test_cls_attention_maps_rejects_bad_shapes():
    model = _vit("cpu")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        viz.cls_attention_maps(model, np.zeros((1, 3, 30, 30), np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        viz.cls_attention_maps(model, np.zeros((3, 32, 32), np.float32))


def test_upsample_maps_repeats_each_cell():
    m = np.arange(4.0).reshape(1, 2, 2)
    up = viz.upsample_maps(m, 3)
    assert up.shape == (1, 6, 6)
    for i in range(6):
        for j in range(6):
            assert up[0, i, j] == m[0, i // 3, j // 3]


def test_patch_pca_rgb_matches_an_eigendecomposition(rng):
    # features with three directions of clearly different variance, plus noise
    B, N, D = 4, 9, 6
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0][:, :3]  # (D, 3) orthonormal
    coef = rng.standard_normal((B * N, 3)) * np.array([5.0, 2.0, 1.0])
    x = coef @ basis.T + 0.01 * rng.standard_normal((B * N, D))
    rgb = viz.patch_pca_rgb(x.reshape(B, N, D))
    assert rgb.shape == (B, 3, 3, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    # reference: eigenvectors of the covariance, largest first
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(xc.T @ xc)
    proj = xc @ v[:, ::-1][:, :3]  # (B*N, 3)
    for k in range(3):
        ref = (proj[:, k] - proj[:, k].min()) / np.ptp(proj[:, k])
        got = rgb.reshape(-1, 3)[:, k]
        # a component's sign is arbitrary: compare with the reference or its mirror
        err = min(np.abs(got - ref).max(), np.abs(got - (1 - ref)).max())
        assert err < 1e-6, (k, err)


def test_patch_pca_rgb_needs_a_grid():
    with pytest.raises(ValueError, match="not a square grid"):
        viz.patch_pca_rgb(np.zeros((1, 6, 4)))
    assert viz.patch_pca_rgb(np.random.default_rng(0).random((1, 6, 4)), grid=(2, 3)).shape \
        == (1, 2, 3, 3)


def test_smooth_is_a_trailing_mean():
    v = [1.0, 3.0, 5.0, 7.0]
    np.testing.assert_allclose(viz.smooth(v, 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(viz.smooth(v, 1), v)


def test_plots_write_pngs(tmp_path, rng):
    model = _vit("cpu")
    images = rng.random((3, 3, 32, 32)).astype(np.float32)
    masks = rng.random((3, 32, 32)) > 0.5
    maps = viz.cls_attention_maps(model, images)
    fig = viz.plot_attention_maps(images, maps, masks=masks, path=tmp_path / "a" / "attn.png")
    assert len(fig.axes) == 3 * (2 + 2)  # image, 2 heads, mean per row
    with mt.no_grad():
        feats = model.forward_features(mt.tensor(images))["x_norm_patchtokens"]
    viz.plot_patch_pca(images, feats, path=tmp_path / "pca.png")
    grey = rng.random((2, 1, 8, 8))  # one channel: drawn in grey
    viz.plot_attention_maps(grey, rng.random((2, 4, 4, 4)), path=tmp_path / "grey.png")
    records = [{"step": s, "loss": 2.0 / s, "acc": s / 10, "sec": 0.1} for s in range(1, 11)]
    records += [{"step": 5, "eval": {"knn_acc": 0.5}}, {"step": 10, "eval": {"knn_acc": 0.7}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records)
                                            + '\n{"step": 11, "lo')  # a torn last line
    fig = viz.plot_loss_curves(tmp_path, path=tmp_path / "loss.png", smoothing=3, log_y=True)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["loss", "acc", "evaluation"]
    for name in ("a/attn.png", "pca.png", "grey.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_plot_attention_maps_checks_shapes(rng):
    with pytest.raises(ValueError, match="does not divide"):
        viz.plot_attention_maps(rng.random((1, 3, 32, 32)), rng.random((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"maps \(B, heads"):
        viz.plot_attention_maps(rng.random((2, 3, 32, 32)), rng.random((1, 2, 4, 4)))


# A device array as strict as CuPy's (no implicit host conversion), from the test suite's
# CuPy stand-in: the backend recognises it as a device array by its module name.
_StrictDeviceArray = cupy_standin.asarray


def test_viz_functions_take_device_arrays(tmp_path, rng):
    """Issue 13 item 9: image_hwc / show_image (the helpers every plot draws images with),
    upsample_maps and plot_attention_maps called
    np.asarray on their input, which CuPy refuses; they now copy through backend.to_numpy."""
    img = rng.random((3, 4, 5)) * 1.4 - 0.2  # some values outside [0, 1]
    dev = _StrictDeviceArray(img)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(dev)  # the stand-in is as strict as CuPy
    np.testing.assert_array_equal(image_hwc(dev), np.clip(img, 0, 1).transpose(1, 2, 0))
    np.testing.assert_array_equal(image_hwc(mt.tensor(img)), image_hwc(img))
    maps = rng.random((2, 2, 4, 4))
    np.testing.assert_array_equal(viz.upsample_maps(_StrictDeviceArray(maps), 8),
                                  viz.upsample_maps(maps, 8))
    images = rng.random((2, 3, 32, 32))
    masks = rng.random((2, 32, 32)) > 0.5
    fig = viz.plot_attention_maps(_StrictDeviceArray(images), _StrictDeviceArray(maps),
                                  masks=_StrictDeviceArray(masks), path=tmp_path / "dev.png")
    assert len(fig.axes) == 2 * (2 + 2)
    assert (tmp_path / "dev.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    show_image(ax, _StrictDeviceArray(img))
    np.testing.assert_array_equal(np.asarray(ax.images[-1].get_array()),
                                  np.clip(img, 0, 1).transpose(1, 2, 0))


def test_viz_functions_take_arrays_on_the_device(device, xp, rng, tmp_path):
    """The same with the device's real arrays (CuPy on the GPU run) and Tensors."""
    images = rng.random((2, 1, 16, 16)).astype(np.float32)
    maps = rng.random((2, 3, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(viz.upsample_maps(xp.asarray(maps), 8),
                                  viz.upsample_maps(maps, 8))
    np.testing.assert_array_equal(image_hwc(xp.asarray(images[0])), image_hwc(images[0]))
    viz.plot_attention_maps(mt.tensor(images, device=device), xp.asarray(maps),
                            masks=xp.asarray(images[:, 0] > 0.5), path=tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG


def test_viz_import_is_light():
    import subprocess
    import sys

    code = "import sys, minitransformer.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.stdout.strip() == "False"

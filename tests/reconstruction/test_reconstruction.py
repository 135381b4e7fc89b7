"""Tests of the lifting operators: backprojection, MIP lifting, filtration F and fine-tuning T.

References: skimage's filtered backprojection (``iradon``), the ramp filter's closed form and its frequency
response, direct ``conv1d`` convolution, ``avg_pool3d`` and scipy's ``uniform_filter``, hand-worked
backprojections of constant data, and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from seg25d.projections import (
    MaxIntensityProjection, axis_geometry, direction_geometry, multi_axis_geometry, project, sphere_geometry,
)
from seg25d.reconstruction import FineTuning, Filtration, backproject, lift_mip, ramp_kernel
from seg25d.reconstruction.filtration import _fast_length

pytestmark = [  # torch's notes on its beta sparse CSR tensors and on wrapping read-only numpy arrays
    pytest.mark.filterwarnings("ignore:Sparse:UserWarning"),
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

PI = math.pi


def _angles(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, PI, n)


def _rand(*shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


TINY = {  # gradcheck-sized geometries of a 2 x 4 x 3 volume
    "axis": lambda: axis_geometry((2, 4, 3), _angles(3, 1)),
    "multi-axis": lambda: multi_axis_geometry((2, 4, 3), {0: _angles(2, 2), 1: 1, 2: [0.4, 2.5]},
                                              spacing=(1.5, 1.0, 0.8)),
    "sphere": lambda: sphere_geometry((2, 4, 3), 2, spacing=(1.0, 1.2, 1.0)),
    "directions": lambda: direction_geometry((2, 4, 3), [[0.0, 1.0, 1.0], [0.5, 0.3, 0.8]]),
}


# ------------------------------------------------------------------------------------------------ backprojection


def test_backprojection_of_constant_detector_data():
    """Hand-worked: every voxel's splat weights sum to one, so R* 1 = P s_p s_q / du (axis views about D)."""
    shape, spacing = (3, 6, 5), (2.0, 0.5, 0.8)
    angles = _angles(4, 3)
    g = axis_geometry(shape, angles, spacing=spacing)
    ones = torch.ones(2, 1, 4, *g.detector_shape, dtype=torch.float64)
    out = backproject(ones, angles, shape=shape, spacing=spacing)
    torch.testing.assert_close(out, torch.full((2, 1, *shape), 4 * 0.5 * 0.8 / g.du, dtype=torch.float64))
    # general views: bilinear weights sum to one, scale s_d s_h s_w / du^2 per view
    g = sphere_geometry(shape, 3, spacing=spacing)
    out = backproject(torch.ones(1, 1, 3, *g.detector_shape, dtype=torch.float64), g, shape=shape)
    torch.testing.assert_close(out, torch.full((1, 1, *shape), 3 * 2.0 * 0.5 * 0.8 / g.du**2, dtype=torch.float64))


def test_backprojection_smears_a_detector_column_along_its_ray():
    """About D at theta = 0 the rays run along H: one lit column lights one W-column of voxels, all along H."""
    shape = (2, 5, 7)
    g = axis_geometry(shape, [0.0])
    y = torch.zeros(1, 1, 1, *g.detector_shape, dtype=torch.float64)
    off = (g.detector_shape[1] - shape[2]) // 2
    y[0, 0, 0, 1, off + 4] = 2.0
    out = backproject(y, g, shape=shape)
    expected = torch.zeros(1, 1, *shape, dtype=torch.float64)
    expected[0, 0, 1, :, 4] = 2.0
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


def test_backproject_rejects_wrong_projection_shapes():
    g = axis_geometry((3, 4, 5), 3)
    good = torch.zeros(1, 1, 3, *g.detector_shape)
    assert backproject(good, g, shape=(3, 4, 5)).shape == (1, 1, 3, 4, 5)
    for bad in (good[:, :, :2], good[..., 1:], good[:, :, :, 1:], good[0]):
        with pytest.raises(ValueError):
            backproject(bad, g, shape=(3, 4, 5))
    with pytest.raises(ValueError):
        backproject(good, g, shape=(3, 4, 6))


@pytest.mark.parametrize("name", list(TINY))
def test_backproject_gradcheck(name):
    g = TINY[name]()
    y = _rand(1, 2, len(g), *g.detector_shape, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: backproject(t, g, shape=g.shape), (y,))


@pytest.mark.parametrize("name", list(TINY))
def test_radon_project_gradcheck(name):
    g = TINY[name]()
    x = _rand(2, 1, *g.shape, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: project(t, g, mode="radon"), (x,))


def test_radon_project_gradcheck_with_plain_angles():
    x = _rand(1, 1, 2, 4, 3, seed=6).requires_grad_(True)
    angles = _angles(3, 7)
    assert torch.autograd.gradcheck(lambda t: project(t, angles, mode="radon", spacing=(1.0, 0.7, 1.1)), (x,))


def test_backproject_double_backward_is_radon():
    """The derivative of R* is R: gradients of gradients flow through both."""
    g = TINY["multi-axis"]()
    y = _rand(1, 1, len(g), *g.detector_shape, seed=8).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: backproject(t, g, shape=g.shape), (y,))


# ---------------------------------------------------------------------------------------------- MIP lifting


def test_lift_mip_returns_detector_ones_to_the_bright_voxel():
    shape = (5, 7, 9)  # all odd: every axis-aligned view hits voxel centres
    g = multi_axis_geometry(shape, {0: [0.0, PI / 2], 1: [0.0, PI / 2], 2: [0.0, PI / 2]})
    x = torch.zeros(1, 1, *shape, dtype=torch.float64)
    x[0, 0, 3, 2, 6] = 1.0
    ones = torch.ones(1, 1, len(g), *g.detector_shape, dtype=torch.float64)
    lifted = lift_mip(ones, x, g)
    assert lifted.shape == x.shape
    assert float(lifted[0, 0, 3, 2, 6]) == len(g)
    # a detector holding 1 only on each view's brightest ray lifts to the bright voxel alone
    y, _ = MaxIntensityProjection(g).with_argmax(x)
    lifted = lift_mip((y == 1.0).to(torch.float64), x, g)
    expected = torch.zeros_like(x)
    expected[0, 0, 3, 2, 6] = len(g)
    assert torch.equal(lifted, expected)


def test_lift_mip_with_angles_about_d():
    shape = (3, 5, 5)
    x = torch.zeros(2, 1, *shape, dtype=torch.float64)
    x[0, 0, 1, 3, 1] = 1.0
    x[1, 0, 2, 0, 4] = 1.0
    ones = torch.ones(2, 1, 4, *axis_geometry(shape, 4).detector_shape, dtype=torch.float64)
    lifted = lift_mip(ones, x, [0.0, PI / 2, 0.0, PI / 2])  # odd H = W: exact at both angles
    assert float(lifted[0, 0, 1, 3, 1]) == 4.0 and float(lifted[1, 0, 2, 0, 4]) == 4.0


@pytest.mark.parametrize("name", ["axis", "multi-axis", "sphere", "directions"])
def test_lift_mip_at_general_angles_lands_near_the_bright_voxel(name):
    g = {"axis": lambda: axis_geometry((5, 7, 9), _angles(5, 9)),
         "multi-axis": lambda: multi_axis_geometry((5, 7, 9), {0: _angles(3, 10), 1: 2, 2: _angles(2, 11)}),
         "sphere": lambda: sphere_geometry((5, 7, 9), 5, spacing=(1.2, 1.0, 0.9)),
         "directions": lambda: direction_geometry((6, 5, 7), [[0.0, 1.0, 0.3], [0.3, 0.5, 0.8], [1, 0, 2.0]]),
         }[name]()
    x = torch.rand(1, 1, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 0.01
    d, h, w = g.shape[0] // 2, 2, g.shape[2] // 2
    x[0, 0, d, h, w] = 1.0
    lifted = lift_mip(torch.ones(1, 1, len(g), *g.detector_shape, dtype=torch.float64), x, g)
    assert float(lifted[0, 0, d, h, w]) > 0
    # each view has rays whose maximum samples the bright voxel; their mass stays in its neighbourhood
    assert float(lifted[0, 0, d - 1:d + 2, h - 1:h + 2, w - 1:w + 2].sum()) >= len(g) - 1e-9
    assert bool((lifted >= 0).all())


def test_lift_mip_is_differentiable_in_the_projections():
    g = TINY["sphere"]()
    x = _rand(1, 1, *g.shape, seed=12)
    y = _rand(1, 1, len(g), *g.detector_shape, seed=13).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lift_mip(t, x, g), (y,))


# -------------------------------------------------------------------------------------------------- filtration


def _convolve_rows(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Independent reference: 'same' linear convolution of every row of ``y`` (..., U) with a centred kernel."""
    rows = y.reshape(-1, 1, y.shape[-1])
    out = F.conv1d(rows, kernel.flip(-1).view(1, 1, -1).to(y.dtype), padding=kernel.numel() // 2)
    return out.view_as(y)


def test_ramp_kernel_closed_form():
    du = 0.5
    k = ramp_kernel(7, du)
    c = 1 / (PI * du) ** 2
    expected = du * torch.tensor([-c / 9, 0, -c, 1 / (4 * du**2), -c, 0, -c / 9], dtype=torch.float64)
    torch.testing.assert_close(k, expected, rtol=1e-15, atol=0)
    assert k.dtype == torch.float64 and torch.equal(k, k.flip(0))
    with pytest.raises(ValueError):
        ramp_kernel(8)


@pytest.mark.parametrize("du", [1.0, 0.6])
def test_ramp_kernel_frequency_response_is_the_ramp(du):
    """The kernel's DTFT approaches |nu| (cycles per mm) on the whole band up to the Nyquist frequency."""
    size = 2001
    k = ramp_kernel(size, du).numpy()
    n = np.arange(size) - size // 2
    f = np.linspace(0.0, 0.5, 11)  # cycles per sample
    response = (k[None, :] * np.cos(2 * PI * f[:, None] * n[None, :])).sum(axis=1)
    np.testing.assert_allclose(response, np.abs(f) / du, atol=2e-3 / du)


def test_filtration_identity_leaves_data_unchanged():
    y = _rand(2, 3, 4, 5, 11)
    out = Filtration(11, init="identity")(y)
    torch.testing.assert_close(out, y, rtol=0, atol=1e-12)
    y32 = y.float()
    torch.testing.assert_close(Filtration(11, init="identity")(y32), y32, rtol=0, atol=1e-5)


def test_filtration_ramp_init_is_pi_times_the_ramp():
    f = Filtration(9, du=0.8, views=2, channels=3)
    assert f.weight.shape == (2, 3, 17)
    torch.testing.assert_close(f.weight.double(), (PI * ramp_kernel(17, 0.8)).expand(2, 3, 17), rtol=1e-6, atol=0)
    with pytest.raises(ValueError):
        Filtration(9, init="hann")
    with pytest.raises(ValueError):
        Filtration()


@pytest.mark.parametrize("columns,kernel_size", [(12, None), (12, 5), (8, 31), (1, None)])
def test_filtration_equals_direct_convolution(columns, kernel_size):
    f = Filtration(columns, kernel_size=kernel_size).double()
    with torch.no_grad():
        f.weight.copy_(_rand(*f.weight.shape, seed=20))
    y = _rand(2, 1, 3, 4, columns, seed=21)
    torch.testing.assert_close(f(y), _convolve_rows(y, f.weight[0, 0]), rtol=1e-12, atol=1e-12)


def test_filtration_applies_to_other_detector_widths():
    """``columns`` only sets the default length: a kernel of 19 taps on 6 columns equals the full convolution."""
    f = Filtration(10, init="ramp").double()
    y = _rand(1, 1, 2, 3, 6, seed=22)
    torch.testing.assert_close(f(y), _convolve_rows(y, f.weight[0, 0]), rtol=1e-12, atol=1e-12)


def test_filtration_per_view_and_channel_filters_with_view_index():
    views, channels, size = 6, 2, 5
    f = Filtration(8, views=views, channels=channels, kernel_size=size).double()
    with torch.no_grad():
        f.weight.copy_(_rand(views, channels, size, seed=23))
    y = _rand(2, channels, 3, 4, 8, seed=24)
    index = torch.tensor([4, 0, 2])
    out = f(y, view_index=index)
    single = Filtration(8, kernel_size=size).double()
    for p, view in enumerate(index.tolist()):
        for c in range(channels):
            expected = _convolve_rows(y[:, c, p], f.weight[view, c])
            torch.testing.assert_close(out[:, c, p], expected, rtol=1e-12, atol=1e-12)
            with torch.no_grad():
                single.weight.copy_(f.weight[view, c])
            alone = single(y[:, c:c + 1, p:p + 1])[:, 0, 0]
            torch.testing.assert_close(out[:, c, p], alone, rtol=1e-12, atol=1e-12)
    # without view_index, the first P filters in order
    torch.testing.assert_close(f(y), f(y, view_index=torch.arange(3)), rtol=0, atol=0)


def test_filtration_shared_over_views_or_channels():
    y = _rand(1, 3, 4, 2, 7, seed=25)
    per_channel = Filtration(7, channels=3, kernel_size=3).double()
    with torch.no_grad():
        per_channel.weight.copy_(_rand(1, 3, 3, seed=26))
    out = per_channel(y)
    for c in range(3):
        torch.testing.assert_close(out[:, c], _convolve_rows(y[:, c], per_channel.weight[0, c]), rtol=1e-12,
                                   atol=1e-12)
    per_view = Filtration(7, views=4, kernel_size=3).double()
    with torch.no_grad():
        per_view.weight.copy_(_rand(4, 1, 3, seed=27))
    out = per_view(y)
    for p in range(4):
        torch.testing.assert_close(out[:, :, p], _convolve_rows(y[:, :, p], per_view.weight[p, 0]), rtol=1e-12,
                                   atol=1e-12)
    with pytest.raises(ValueError):
        Filtration(7, channels=2)(y)


def test_filtration_gradcheck_input_and_weight():
    f = Filtration(5, views=3, channels=2, kernel_size=5).double()
    y = _rand(1, 2, 2, 2, 5, seed=28).requires_grad_(True)
    weight = _rand(3, 2, 5, seed=29).requires_grad_(True)
    index = torch.tensor([2, 0])

    def run(y_, w_):
        return torch.func.functional_call(f, {"weight": w_}, (y_,), {"view_index": index})

    assert torch.autograd.gradcheck(run, (y, weight))


def test_fast_length_is_the_smallest_5_smooth_size():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 400):
        assert _fast_length(n) == next(m for m in range(n, 2 * n + 1) if smooth(m))


def test_filtered_backprojection_matches_skimage_iradon():
    """Ramp-filtered backprojection of a 64 x 64 Shepp-Logan over 180 angles is as good as skimage's iradon.

    Our FBP: ``backproject(F(radon(x))) / P`` with ``F = Filtration(U, init="ramp")`` (pi times the ramp).
    skimage: ``iradon(radon(x, circle=False), filter_name="ramp", circle=False)``. Each is compared with the
    phantom (RMSE over the phantom's std); both come out at 0.216, so 1.1 x skimage's error is a real bar.
    """
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    phantom = resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)
    degrees = np.arange(180) * 1.0
    reference = iradon(radon(phantom, theta=degrees, circle=False), theta=degrees, filter_name="ramp",
                       circle=False)
    assert reference.shape == phantom.shape

    g = axis_geometry((1, 64, 64), np.deg2rad(degrees))
    x = torch.from_numpy(phantom)[None, None, None]
    filtration = Filtration(g.detector_shape[1], init="ramp")
    with torch.no_grad():
        ours = backproject(filtration(project(x, g, mode="radon")), g, shape=g.shape) / len(g)
    ours = ours[0, 0, 0].numpy()

    def error(image):
        return float(np.sqrt(np.mean((image - phantom) ** 2)) / phantom.std())

    assert error(ours) <= 1.1 * error(reference)
    assert error(ours) < 0.3
    assert abs(ours.mean() - phantom.mean()) < 0.01 * phantom.max()  # the DC level is right


def test_unfiltered_backprojection_is_much_worse():
    """Sanity of the bar above: without the ramp, backprojection blurs (the filter matters)."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    phantom = resize(shepp_logan_phantom(), (32, 32), anti_aliasing=True)
    g = axis_geometry((1, 32, 32), 60)
    x = torch.from_numpy(phantom)[None, None, None]
    y = project(x, g, mode="radon")
    plain = backproject(y, g, shape=g.shape)[0, 0, 0].numpy() / len(g)
    plain *= phantom.sum() / plain.sum()
    ramp = backproject(Filtration(g.detector_shape[1])(y), g, shape=g.shape)[0, 0, 0].detach().numpy() / len(g)
    rmse = [np.sqrt(np.mean((im - phantom) ** 2)) for im in (plain, ramp)]
    assert rmse[1] < 0.6 * rmse[0]


# -------------------------------------------------------------------------------------------------- fine-tuning


def _scipy_mean_pool(x: np.ndarray, pool: int) -> np.ndarray:
    """Average over the in-volume part of a ``pool``^3 window (count_include_pad=False), via scipy."""
    from scipy.ndimage import uniform_filter

    axes = (-3, -2, -1)
    total = uniform_filter(x, size=pool, mode="constant", axes=axes)
    count = uniform_filter(np.ones_like(x), size=pool, mode="constant", axes=axes)
    return total / count


@pytest.mark.parametrize("shape,pool", [((4, 6, 5), 1), ((4, 6, 5), 3), ((5, 6, 7), 5), ((1, 6, 5), 3),
                                        ((4, 6, 5), 5), ((2, 4, 3), 3)])
def test_fine_tuning_is_affine_average_pool_per_channel(shape, pool):
    """``a * mean over the in-volume window + b`` per channel, also for volumes thinner than the window."""
    t = FineTuning(channels=3, pool=pool).double()
    with torch.no_grad():
        t.scale.copy_(torch.tensor([2.0, -1.0, 0.5]))
        t.shift.copy_(torch.tensor([0.1, 0.0, -3.0]))
    x = _rand(2, 3, *shape, seed=30)
    out = t(x)
    assert out.shape == x.shape
    pooled = torch.from_numpy(_scipy_mean_pool(x.numpy(), pool))
    expected = pooled * t.scale.view(1, 3, 1, 1, 1) + t.shift.view(1, 3, 1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    if min(shape) >= pool:  # torch's own pooling accepts it
        torch_pooled = F.avg_pool3d(x, pool, stride=1, padding=pool // 2, count_include_pad=False)
        torch.testing.assert_close(torch_pooled, pooled, rtol=1e-10, atol=1e-12)


def test_fine_tuning_defaults_and_validation():
    t = FineTuning()
    assert t.scale.tolist() == [10.0] and t.shift.tolist() == [-5.0] and t.pool == 3
    x = torch.full((1, 1, 3, 3, 3), 0.5)
    torch.testing.assert_close(t(x), torch.zeros_like(x), rtol=0, atol=1e-6)  # 10 * 0.5 - 5 = 0
    with pytest.raises(ValueError):
        FineTuning(pool=2)


def test_fine_tuning_gradcheck():
    t = FineTuning(channels=2, pool=3).double()
    x = _rand(1, 2, 2, 4, 3, seed=31).requires_grad_(True)
    scale = torch.tensor([1.5, -0.5], dtype=torch.float64, requires_grad=True)
    shift = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)

    def run(x_, a_, b_):
        return torch.func.functional_call(t, {"scale": a_, "shift": b_}, (x_,))

    assert torch.autograd.gradcheck(run, (x, scale, shift))

"""Metric functions on hand-built features, point clouds and images (no Inception here)."""
import numpy as np
import pytest

from training.evaluation import metrics as M


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.standard_normal((400, 32)) * rng.uniform(0.5, 2.0, 32) + rng.uniform(-1, 1, 32)


def test_fid_of_a_set_against_itself_is_zero(feats):
    assert M.fid(feats, feats) == pytest.approx(0, abs=1e-8)


def test_fid_grows_monotonically_with_feature_noise(feats):
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(feats.shape)
    values = [M.fid(feats, feats + s * noise) for s in (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)]
    assert values[0] == pytest.approx(0, abs=1e-8)
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_fid_small_sample_path_matches_the_full_covariance_formula():
    # n < d takes the n x n eigenvalue route; it must equal the textbook d x d formula.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 80)) * rng.uniform(0.5, 2, 80)
    b = rng.standard_normal((45, 80)) + 0.3
    full = M.frechet_distance(*M.gaussian_stats(a), *M.gaussian_stats(b))
    assert M.fid(a, b) == pytest.approx(full, rel=1e-6)
    assert M.fid(b, a) == pytest.approx(full, rel=1e-6)


def test_fid_of_two_gaussians_matches_the_closed_form():
    # Isotropic: FID = |mu1-mu2|^2 + d (s1 - s2)^2 for covariances s^2 I; large n -> close.
    rng = np.random.default_rng(3)
    d = 8
    a = rng.standard_normal((20000, d))
    b = 2 * rng.standard_normal((20000, d)) + 1
    assert M.fid(a, b) == pytest.approx(d * 1 + d * (1 - 2) ** 2, rel=0.03)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((600, 64)), rng.standard_normal((600, 64))
    mean, std = M.kid(a, b, num_subsets=50, subset_size=300, seed=0)
    assert abs(mean) < 3e-3 and std > 0
    shifted, _ = M.kid(a, b + 0.5, num_subsets=50, subset_size=300, seed=0)
    assert shifted > 100 * max(abs(mean), 1e-4)


def test_kid_can_be_negative_and_paths_agree():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((200, 16)), rng.standard_normal((200, 16))
    means = [M.kid(a, b, num_subsets=20, subset_size=50, seed=s)[0] for s in range(10)]
    assert min(means) < 0 < max(means)  # unbiased: scatters around 0
    gram = M.kid(a, b, num_subsets=5, subset_size=50, seed=1)
    direct = M.kid(a, b, num_subsets=5, subset_size=50, seed=1, gram_limit=0)
    assert gram == pytest.approx(direct, rel=1e-5, abs=1e-7)


def test_precision_recall_identical_clouds(feats):
    assert M.precision_recall(feats, feats) == (1.0, 1.0)


def test_precision_recall_disjoint_far_clouds(feats):
    assert M.precision_recall(feats, feats + 1000) == (0.0, 0.0)


def test_precision_recall_when_half_the_modes_are_covered():
    rng = np.random.default_rng(6)
    modes = rng.standard_normal((10, 2)) * 50
    real = np.concatenate([m + rng.standard_normal((200, 2)) for m in modes])
    fake = np.concatenate([m + rng.standard_normal((400, 2)) for m in modes[:5]])  # fresh samples, 5 modes
    precision, recall = M.precision_recall(real, fake, k=3)
    assert precision > 0.95
    assert recall == pytest.approx(0.5, abs=0.05)


def _blobs(rng, n, size=16):
    """Smooth 'anatomy': one bright disc per image at a random place and size."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2, 5)]
        out.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 200, 30))
    return np.stack(out).astype(np.uint8)


def test_nearest_neighbours_flag_planted_copies_exactly():
    rng = np.random.default_rng(7)
    train, heldout = _blobs(rng, 80), _blobs(rng, 40)
    copies = train[[3, 17, 42, 5, 9]]
    noise = rng.integers(0, 256, (15, 16, 16)).astype(np.uint8)  # far from every training image
    synthetic = np.concatenate([copies, noise])
    px = lambda x: M.downsample_pixels(x, 64)  # noqa: E731
    syn_d, syn_i = M.nearest_neighbours(px(synthetic), px(train))
    assert np.all(syn_d[:5] == 0) and list(syn_i[:5]) == [3, 17, 42, 5, 9]
    assert np.all(syn_d[5:] > 0)
    held_d, _ = M.nearest_neighbours(px(heldout), px(train))
    memo = M.memorization(syn_d, held_d)
    assert memo["threshold"] > 0
    assert memo["fraction_closer"] == pytest.approx(5 / 20)   # exactly the planted copies
    assert memo["fraction_exact_copies"] == pytest.approx(5 / 20)
    assert memo["median_synthetic"] > memo["median_heldout"]  # noise is farther than unseen real images
    # Distances themselves: exact float64 Euclidean.
    ref = np.sqrt(((px(noise)[0].astype(np.float64) - px(train).astype(np.float64)) ** 2).sum(1)).min()
    assert syn_d[5] == pytest.approx(ref, rel=1e-9)


def test_nearest_neighbours_exclude_self():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    d, i = M.nearest_neighbours(x, x, exclude_self=True)
    assert list(i) == [1, 0, 1] and d[0] == pytest.approx(1.0)


def test_ms_ssim_identical_pairs_is_one_and_noise_is_low():
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (6, 64, 64)).astype(np.uint8)
    b = rng.integers(0, 256, (6, 64, 64)).astype(np.uint8)
    assert np.allclose(M.ms_ssim(a, a), 1.0, atol=1e-5)
    assert M.ms_ssim(a, b).mean() < 0.15
    smooth = np.clip(rng.normal(128, 30, (4, 64, 64)), 0, 255)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255)
    mid = M.ms_ssim(smooth, noisy)
    assert np.all((mid > 0.5) & (mid < 0.99))


def test_ms_ssim_of_constant_images_matches_luminance_formula():
    # Constant images: every contrast-structure term is exactly 1; only the coarsest luminance remains.
    a, b = np.full((1, 64, 64), 100.0), np.full((1, 64, 64), 150.0)
    c1 = (0.01 * 255) ** 2
    lum = (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1)
    scales = M.ms_ssim_scales(64)
    w = np.array(M.MS_SSIM_WEIGHTS[:scales]) / sum(M.MS_SSIM_WEIGHTS[:scales])
    assert scales == 3
    assert M.ms_ssim(a, b)[0] == pytest.approx(lum ** w[-1], rel=1e-5)


def test_ms_ssim_scales_fit_small_images():
    assert [M.ms_ssim_scales(s) for s in (32, 64, 128, 256)] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="do not fit"):
        M.ms_ssim(np.zeros((1, 16, 16)), np.zeros((1, 16, 16)), scales=3)


def test_diversity_of_a_collapsed_set_is_one_and_random_pairs_are_distinct():
    rng = np.random.default_rng(9)
    one = np.repeat(rng.integers(0, 256, (1, 32, 32)), 10, axis=0)
    assert M.mean_pairwise_ms_ssim(one, 50) == pytest.approx(1.0, abs=1e-5)
    varied = rng.integers(0, 256, (10, 32, 32))
    assert M.mean_pairwise_ms_ssim(varied, 50) < 0.2
    pairs = M.random_pairs(5, 1000, seed=0)
    assert np.all(pairs[:, 0] != pairs[:, 1]) and pairs.min() == 0 and pairs.max() == 4


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="equal d"):
        M.kid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="k=3"):
        M.kth_nn_radii(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="dims"):
        M.nearest_neighbours(np.zeros((2, 3)), np.zeros((2, 4)))

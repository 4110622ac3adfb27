"""Pure metric functions on feature arrays and image batches (no model loading, no I/O).

Features are float arrays [n, d]; images are uint8 (or float in 0..255) arrays/tensors [n, H, W] or
[n, C, H, W]. Every function that subsamples takes a `seed`, so results are reproducible.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# --- FID -----------------------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, n-1) covariance of features [n, d], in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [n>=2, d], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1-mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½).

    Tr((S1 S2)^½) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^½ S2 S1^½ (same eigenvalues as S1 S2). Unlike scipy.linalg.sqrtm of the non-symmetric product,
    this never yields complex parts and stays stable when the covariances are rank-deficient (n < d).
    """
    w, v = np.linalg.eigh(sigma1)
    sqrt1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt1 @ sigma2 @ sqrt1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean, 0.0))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet Inception Distance between two feature sets. Biased upward for small n (compare equal n).

    When a set has fewer points than dimensions, Tr((S1 S2)^½) comes from the eigenvalues of a small
    n x n matrix instead (S = XᵀX/(n-1) with X centred: the non-zero eigenvalues of S1 S2 are those of
    (X1 X2ᵀ)(X1 X2ᵀ)ᵀ/((n1-1)(n2-1))), which is exact and much faster than two d x d eigendecompositions.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need features [n>=2, d] with equal d, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    xa, xb = a - a.mean(0), b - b.mean(0)
    cross = xa @ xb.T if len(a) <= len(b) else xb @ xa.T
    m = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    tr_a = (xa * xa).sum() / (len(a) - 1)
    tr_b = (xb * xb).sum() / (len(b) - 1)
    return float(max(diff @ diff + tr_a + tr_b - 2 * tr_covmean, 0.0))


# --- Inception Score ------------------------------------------------------------------------------------


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) from classifier logits [n, classes],
    mean and std over `splits` consecutive parts (p(y) per part), as the reference implementation does.

    1 when every image gets the same prediction; at most the number of classes (confident and spread evenly).
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or not np.isfinite(x).all():
        raise ValueError(f"need finite logits [n, classes >= 2], got shape {x.shape}")
    if not 1 <= splits <= len(x):
        raise ValueError(f"need 1 <= splits <= n, got {splits} splits of {len(x)} images")
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))   # log softmax, stable
    p = np.exp(log_p)
    scores = []
    for part in np.array_split(np.arange(len(x)), splits):
        log_py = np.log(np.maximum(p[part].mean(axis=0), np.finfo(np.float64).tiny))
        kl = (p[part] * (log_p[part] - log_py)).sum(axis=1).mean()
        scores.append(math.exp(max(kl, 0.0)))  # KL >= 0; rounding can leave -1e-16
    return float(np.mean(scores)), float(np.std(scores))


# --- KID -----------------------------------------------------------------------------------------------


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, gram_limit: int = 8000) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): mean and std over subsets of the unbiased MMD²
    with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³.

    Subsets of m = min(subset_size, n_a, n_b) are drawn without replacement from each set (as StyleGAN2-ADA
    does). Unbiased: the mean is ≈ 0, and can be negative, for two samples of one distribution.
    """
    # Kernel matrices in float32 (torch, multi-threaded), sums in float64: KID is a small difference of
    # large sums, but float32 kernel entries leave errors ~1e-6, far below the values that matter.
    a = torch.as_tensor(np.asarray(features_a, dtype=np.float32))
    b = torch.as_tensor(np.asarray(features_b, dtype=np.float32))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need features [n, d] with equal d, got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    kernel = lambda u, v: ((u @ v.T) / d + 1) ** 3  # noqa: E731
    # With few points, one kernel matrix over both sets is cheaper than 3 per subset; same numbers.
    gram = kernel(torch.cat([a, b]), torch.cat([a, b])) if len(a) + len(b) <= gram_limit else None
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        ia = torch.as_tensor(rng.choice(len(a), m, replace=False))
        ib = torch.as_tensor(rng.choice(len(b), m, replace=False))
        if gram is not None:
            kxx, kyy, kxy = gram[ia][:, ia], gram[ib + len(a)][:, ib + len(a)], gram[ia][:, ib + len(a)]
        else:
            x, y = a[ia], b[ib]
            kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (kxx.sum(dtype=torch.float64) - kxx.diagonal().sum(dtype=torch.float64)
                  + kyy.sum(dtype=torch.float64) - kyy.diagonal().sum(dtype=torch.float64)) / (m * (m - 1))
        values[i] = float(within - 2 * kxy.sum(dtype=torch.float64) / (m * m))
    return float(values.mean()), float(values.std())


# --- nearest neighbours, precision / recall ------------------------------------------------------------


def _pairwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(x), len(y)] via the matrix product (fast; clamped at 0)."""
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None] - 2 * x @ y.T
    return sq.clamp_min_(0).sqrt_()


def kth_nn_radii(features: np.ndarray, k: int = 3, batch: int = 1024) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour within the same set (itself excluded)."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if len(x) <= k:
        raise ValueError(f"need more than k={k} points to get k-NN radii, got {len(x)}")
    out = []
    for i in range(0, len(x), batch):
        d = _pairwise(x[i:i + batch], x)
        # Index k of the sorted row: index 0 is the point itself (distance 0).
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out).numpy()


def _fraction_inside(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray, batch: int = 1024) -> float:
    """Fraction of queries inside at least one hypersphere (centre, radius)."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    c = torch.as_tensor(np.asarray(centres, dtype=np.float32))
    r = torch.as_tensor(np.asarray(radii, dtype=np.float32))
    inside = 0
    for i in range(0, len(q), batch):
        inside += int((_pairwise(q[i:i + batch], c) <= r[None]).any(dim=1).sum())
    return inside / len(q)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    The real manifold is the union of hyperspheres around each real point with radius = distance to its
    k-th nearest real neighbour; precision = fraction of fake points inside it. Recall swaps the roles.
    """
    precision = _fraction_inside(fake, real, kth_nn_radii(real, k))
    recall = _fraction_inside(real, fake, kth_nn_radii(fake, k))
    return precision, recall


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray, batch: int = 512,
                       exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest reference row, Euclidean.

    The neighbour is found with a float32 matrix product, then its distance is recomputed exactly in
    float64 from the difference, so an exact copy reports exactly 0.
    """
    q = np.asarray(queries).reshape(len(queries), -1)
    r = np.asarray(reference).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dims but reference has {r.shape[1]}")
    rt = torch.as_tensor(r.astype(np.float32))
    idx = np.empty(len(q), dtype=np.int64)
    for i in range(0, len(q), batch):
        d = _pairwise(torch.as_tensor(q[i:i + batch].astype(np.float32)), rt)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        idx[i:i + batch] = d.argmin(dim=1).numpy()
    diff = q.astype(np.float64) - r[idx].astype(np.float64)
    return np.sqrt((diff * diff).sum(axis=1)), idx


def memorization(synthetic_nn: np.ndarray, heldout_nn: np.ndarray, percentile: float = 5.0) -> dict:
    """Summaries of nearest-neighbour distances to the training set.

    `synthetic_nn`: each synthetic image's distance to its nearest training image; `heldout_nn`: the same
    for held-out real images (never trained on). A generator that copies has many synthetic images closer
    to the training set than almost any unseen real image is: `fraction_closer` is the share of synthetic
    images below the held-out distances' `percentile`-th percentile (≈ percentile/100 if synthetic images
    are as far from the training set as unseen real ones; much higher suggests copying).
    """
    s = np.asarray(synthetic_nn, dtype=np.float64)
    h = np.asarray(heldout_nn, dtype=np.float64)
    threshold = float(np.percentile(h, percentile))
    return {
        "median_synthetic": float(np.median(s)),
        "median_heldout": float(np.median(h)),
        "heldout_percentile": percentile,
        "threshold": threshold,
        "fraction_closer": float((s < threshold).mean()),
        "fraction_exact_copies": float((s == 0).mean()),
        "expected_fraction_if_no_copying": percentile / 100,
    }


# --- MS-SSIM -------------------------------------------------------------------------------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first


def ms_ssim_scales(size: int, kernel_size: int = 7, max_scales: int = 5) -> int:
    """Scales such that the coarsest image is still at least twice the window (so SSIM has >1 window
    position per axis): 3 at 64² with a 7x7 window (64, 32, 16), 2 at 32², 5 at 256²."""
    scales = 1
    while scales < max_scales and size // 2 ** scales >= 2 * kernel_size:
        scales += 1
    return scales


def _gaussian_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(torch.float32)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Valid separable Gaussian filtering of each channel (rows, then columns)."""
    c, k = x.shape[1], len(g)
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _as_nchw(images) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(images))
    x = x.to(torch.float32)  # float32 is ample for 0..255 data here, and far faster than float64 convs
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"need images [n, H, W] or [n, C, H, W], got shape {tuple(x.shape)}")
    return x


def ms_ssim(x, y, data_range: float = 255.0, kernel_size: int = 7, sigma: float = 1.5,
            scales: int | None = None) -> np.ndarray:
    """Multi-scale SSIM of each pair (x[i], y[i]); returns [n] values in [0, 1].

    As Wang et al. 2003 (valid Gaussian filtering, 2x2 average-pool between scales, contrast-structure
    terms at every scale but the coarsest, luminance too at the coarsest), except that the window and
    the number of scales fit small images: by default a 7x7 window (sigma 1.5) and `ms_ssim_scales`
    scales, with the standard weights of those scales renormalised to sum to 1. Negative per-scale
    values are clamped to 0 (as pytorch-msssim does) so the weighted product stays defined.
    """
    a, b = _as_nchw(x), _as_nchw(y)
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    size = min(a.shape[-2:])
    scales = scales or ms_ssim_scales(size, kernel_size)
    if size // 2 ** (scales - 1) < kernel_size:
        raise ValueError(f"{scales} scales with a {kernel_size}x{kernel_size} window do not fit {size}² images")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float32)
    weights = weights / weights.sum()
    g = _gaussian_1d(kernel_size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for s in range(scales):
        mu_a, mu_b = _blur(a, g), _blur(b, g)
        var_a = _blur(a * a, g) - mu_a ** 2
        var_b = _blur(b * b, g) - mu_b ** 2
        cov = _blur(a * b, g) - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        if s == scales - 1:
            lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
            values.append((lum * cs).flatten(1).mean(1))
        else:
            values.append(cs.flatten(1).mean(1))
            a = F.avg_pool2d(a, 2, ceil_mode=True)
            b = F.avg_pool2d(b, 2, ceil_mode=True)
    stacked = torch.stack(values, dim=1).clamp_min(0).to(torch.float64)
    return torch.prod(stacked ** weights[None].to(torch.float64), dim=1).numpy()


def random_pairs(n: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` random pairs (i, j) of distinct indices in range(n), [count, 2]."""
    if n < 2:
        raise ValueError(f"need at least 2 images to form pairs, got {n}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, count)
    j = (i + rng.integers(1, n, count)) % n  # never equal to i
    return np.stack([i, j], axis=1)


def mean_pairwise_ms_ssim(images, num_pairs: int = 1000, seed: int = 0, batch: int = 256, **kwargs) -> float:
    """Diversity: mean MS-SSIM over random pairs of distinct images (lower = more diverse)."""
    x = _as_nchw(images)
    pairs = random_pairs(len(x), num_pairs, seed)
    scores = [ms_ssim(x[pairs[i:i + batch, 0]], x[pairs[i:i + batch, 1]], **kwargs)
              for i in range(0, len(pairs), batch)]
    return float(np.concatenate(scores).mean())


def downsample_pixels(images, max_size: int = 64) -> np.ndarray:
    """uint8 images [n, (C,) H, W] -> float32 [n, d] in [0, 1], area-averaged down to <= max_size per side."""
    x = _as_nchw(images)
    factor = max(1, math.ceil(x.shape[-1] / max_size))
    if factor > 1:
        x = F.avg_pool2d(x, factor, ceil_mode=True)
    return (x / 255.0).flatten(1).to(torch.float32).numpy()

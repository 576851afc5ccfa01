"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID), in NumPy/SciPy.

FID (Heusel et al., 2017) fits a Gaussian to each set of image features and measures
    d^2 = |mu_1 - mu_2|^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2)),
with mu the mean and C the unbiased covariance (`np.cov`) of the features. This is the quantity
of the original TensorFlow code (bioinf-jku/TTUR `calculate_frechet_distance`). The trace of
(C_1 C_2)^(1/2) is computed here as the sum of the singular values of C_1^(1/2) C_2^(1/2) (their
squares are the eigenvalues of C_1 C_2), with the symmetric square roots from `eigh`: no complex
matrix square root, and no diagonal offset when the covariances are singular (fewer images than
feature dimensions), where identical sets still give 0 to rounding.

KID (Binkowski et al., 2018) is the unbiased estimate of the squared maximum mean discrepancy
with the polynomial kernel k(x, y) = (x . y / d + 1)^3, averaged over random subsets; unlike FID
it is unbiased, so small sets give comparable numbers.

Features come from a pluggable extractor (`spade_tf.evaluation.inception`): any callable that
maps a batch of uint8 images [N, H, W, 3] to features [N, D].
"""

import os
import pathlib
import typing

import numpy as np
from PIL import Image, UnidentifiedImageError

from spade_tf.config import EvalConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
KID_SUBSETS, KID_SUBSET_SIZE, BATCH_SIZE = EvalConfig.kid_subsets, EvalConfig.kid_subset_size, EvalConfig.batch_size


def _features(features, name="features") -> np.ndarray:
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must be [N, D] with at least 2 rows, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def statistics(features) -> typing.Tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of features [N, D], as float64."""
    x = _features(features)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (rounding negatives to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"means and covariances must be [D] and [D, D] of one D; got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    trace_sqrt = np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*statistics(features1), *statistics(features2))


def polynomial_kernel(x, y) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for rows of x [N, d] and y [M, d] -> [N, M]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased estimate of MMD^2 between the samples x [m, d] and y [n, d] (polynomial kernel):

    sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n).
    """
    x, y = _features(x, "x"), _features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {x.shape[1]} and {y.shape[1]}")
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid_from_features(features1, features2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """(mean, standard deviation) of `mmd2_unbiased` over `subsets` random subsets of each set.

    Each subset holds min(subset_size, N1, N2) features drawn without replacement.
    """
    x, y = _features(features1, "features1"), _features(features2, "features2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"the feature sets have different sizes: {x.shape[1]} and {y.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


# --- image folders ---------------------------------------------------------------------------

def image_files(folder) -> typing.List[pathlib.Path]:
    """The images (png, jpg, jpeg, bmp) directly in `folder`, sorted by name."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if len(files) < 2:
        raise ValueError(
            f"{folder} holds {len(files)} images ({', '.join(IMAGE_EXTENSIONS)}); FID and KID need at least 2"
        )
    return files


def read_rgb(path) -> np.ndarray:
    """uint8 [H, W, 3] of an image file (grey and palette images converted, alpha dropped)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from None


def extract_features(paths, extractor, batch_size=BATCH_SIZE) -> np.ndarray:
    """Features [N, D] of image files, in batches of up to `batch_size` images of one size.

    Every image counts (the original code drops the last partial batch; that is not copied).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features, batch = [], []

    def flush():
        if batch:
            features.append(np.asarray(extractor(np.stack(batch)), np.float64).reshape(len(batch), -1))
            batch.clear()

    for path in paths:
        image = read_rgb(path)
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(image)
    flush()
    return np.concatenate(features)


def _paths(files_or_folder):
    if isinstance(files_or_folder, (str, os.PathLike)):
        return image_files(files_or_folder)
    paths = [pathlib.Path(p) for p in files_or_folder]
    if len(paths) < 2:
        raise ValueError(f"FID and KID need at least 2 images per set, got {len(paths)}")
    return paths


def fid_kid(
    real, fake, extractor, batch_size=BATCH_SIZE, kid_subsets=KID_SUBSETS, kid_subset_size=KID_SUBSET_SIZE
) -> dict:
    """{"fid", "kid", "kid_std", "num_real", "num_fake"} between two image sets.

    `real` and `fake` are folders or lists of image files; `extractor` maps uint8 [N, H, W, 3] to [N, D].
    """
    real_paths, fake_paths = _paths(real), _paths(fake)
    real_features = extract_features(real_paths, extractor, batch_size)
    fake_features = extract_features(fake_paths, extractor, batch_size)
    kid, kid_std = kid_from_features(real_features, fake_features, kid_subsets, kid_subset_size)
    return {
        "fid": fid_from_features(real_features, fake_features),
        "kid": kid,
        "kid_std": kid_std,
        "num_real": len(real_paths),
        "num_fake": len(fake_paths),
    }

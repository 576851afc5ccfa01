"""FID and KID maths against closed forms and direct implementations; the Inception GraphDef
extractor on a small stand-in graph with the real graph's tensor names; the fid command and its
`eval.*` options."""

import json

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from PIL import Image

from spade_tf.evaluation import fid, inception
from spade_tf.evaluation.__main__ import main as evaluation_main

from helpers.standin_graph import STANDIN_FEATURES, STANDIN_WEIGHTS, write_standin_graph



def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


# --- Fréchet distance ------------------------------------------------------------------------------

def test_frechet_distance_of_gaussians_with_a_common_eigenbasis_has_the_closed_form():
    # C1 = Q diag(a) Q^T, C2 = Q diag(b) Q^T: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    q = random_rotation(5, rng)
    a, b = np.array([1.0, 4.0, 9.0, 0.25, 2.0]), np.array([4.0, 1.0, 9.0, 1.0, 0.5])
    mu1, mu2 = np.array([1.0, 0.0, -2.0, 3.0, 0.5]), np.array([0.0, 0.0, 1.0, 3.0, -0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(11.0 + 2.75, rel=1e-12)  # by hand: (sqrt(2) - sqrt(1/2))^2 = 1/2


def test_frechet_distance_of_non_commuting_2x2_covariances():
    # For 2x2 matrices with non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 1.0], [1.0, 3.0]])
    s2 = np.array([[1.0, 0.3], [0.3, 0.5]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2
    trace_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    expected = 8.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_equals_the_original_sqrtm_formula():
    # TTUR's calculate_frechet_distance: |diff|^2 + tr(C1) + tr(C2) - 2 tr(sqrtm(C1 C2)).
    rng = np.random.default_rng(1)
    s1, s2 = random_spd(8, rng), random_spd(8, rng)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n, d", [(200, 8), (30, 64)])  # full-rank and singular covariances
def test_fid_of_identical_features_is_zero(n, d):
    x = np.random.default_rng(2).standard_normal((n, d)) * 3.0 + 1.0
    assert abs(fid.fid_from_features(x, x)) < 1e-6


def test_fid_is_symmetric_and_positive():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 6))
    y = rng.standard_normal((80, 6)) @ random_spd(6, rng) + 0.5
    assert fid.fid_from_features(x, y) == pytest.approx(fid.fid_from_features(y, x), rel=1e-10)
    assert fid.fid_from_features(x, y) > 0.5


def test_fid_of_samples_approaches_the_distance_of_their_gaussians():
    rng = np.random.default_rng(4)
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.diag([2.0, 2.0, 2.0])
    x = rng.multivariate_normal(mu1, s1, size=50_000)
    y = rng.multivariate_normal(mu2, s2, size=50_000)
    expected = 5.0 + (1 - np.sqrt(2)) ** 2 + 0.0 + (np.sqrt(0.5) - np.sqrt(2)) ** 2
    assert fid.fid_from_features(x, y) == pytest.approx(expected, abs=0.05)


def test_statistics_and_bad_inputs():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mu, sigma = fid.statistics(x)
    np.testing.assert_allclose(mu, [3.0, 4.0])
    np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])  # unbiased (n - 1)
    with pytest.raises(ValueError, match="at least 2 rows"):
        fid.statistics(x[:1])
    with pytest.raises(ValueError, match="NaN"):
        fid.statistics(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match=r"\[D\] and \[D, D\]"):
        fid.frechet_distance(mu, sigma, np.zeros(3), np.eye(3))


# --- KID -------------------------------------------------------------------------------------------

def mmd2_by_loops(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_matches_a_direct_loop():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 4)), rng.standard_normal((9, 4)) + 0.7
    assert fid.mmd2_unbiased(x, y) == pytest.approx(mmd2_by_loops(x, y), rel=1e-10)


def test_kid_with_one_full_subset_is_the_unbiased_estimate():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((15, 3)), rng.standard_normal((15, 3)) * 2
    mean, std = fid.kid_from_features(x, y, subsets=1, subset_size=1000)
    assert mean == pytest.approx(mmd2_by_loops(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_is_near_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 16))
    # One set against itself: the estimate is (2 / (n (n - 1))) (sum(K) / n - trace(K)), O(1/n).
    kernel = (x @ x.T / 16 + 1.0) ** 3
    itself, _ = fid.kid_from_features(x, x, subsets=1, subset_size=400)
    assert itself == pytest.approx(2 / (400 * 399) * (kernel.sum() / 400 - np.trace(kernel)), rel=1e-10)
    same, _ = fid.kid_from_features(x, x, subsets=20, subset_size=200)
    independent, _ = fid.kid_from_features(x, rng.standard_normal((400, 16)), subsets=20, subset_size=200)
    shifted, _ = fid.kid_from_features(x, x + 1.0, subsets=20, subset_size=200)
    assert shifted > 1.0
    assert abs(itself) < 0.01 * shifted and abs(same) < 0.01 * shifted and abs(independent) < 0.01 * shifted
    with pytest.raises(ValueError, match="different sizes"):
        fid.kid_from_features(x, x[:, :3])


# --- the Inception GraphDef extractor --------------------------------------------------------------

@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_graph(tmp_path_factory.mktemp("inception") / "classify_image_graph_def.pb")


def test_graph_extractor_feeds_expanddims_and_reads_pool_3(standin):
    extractor = inception.Inception2015(standin)
    # A constant image stays constant through the graph's resize: its features are relu(((c - 128) / 128) W).
    colours = np.array([[0, 128, 255], [200, 10, 60], [90, 90, 90]], np.uint8)
    images = np.broadcast_to(colours[:, None, None, :], (3, 37, 53, 3))
    expected = np.maximum(((colours - 128.0) / 128.0) @ STANDIN_WEIGHTS, 0.0)
    got = extractor(images)
    assert got.shape == (3, STANDIN_FEATURES) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)  # float32 sums over 299 x 299 pixels
    # A batch gives what its images give one by one (the graph's batch-1 reshape does not run).
    noisy = np.random.default_rng(9).integers(0, 256, (4, 21, 30, 3), dtype=np.uint8)
    one_by_one = np.concatenate([extractor(image[None]) for image in noisy])
    np.testing.assert_allclose(extractor(noisy), one_by_one, atol=1e-5)


def test_graph_extractor_errors(tmp_path, standin):
    with pytest.raises(FileNotFoundError, match="eval.inception_graph"):
        inception.Inception2015(tmp_path / "missing.pb")
    with pytest.raises(FileNotFoundError, match="eval.inception_graph.*nothing is downloaded"):
        inception.build_extractor("inception-2015")
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        inception.Inception2015(garbage)
    other = tf.Graph()
    with other.as_default():
        tf.constant(1.0, name="ExpandDims")
    wrong = tmp_path / "other.pb"
    wrong.write_bytes(other.as_graph_def().SerializeToString())
    with pytest.raises(ValueError, match="no tensor pool_3:0"):
        inception.Inception2015(wrong)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        inception.Inception2015(standin)(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown feature extractor"):
        inception.build_extractor("vgg")


def test_keras_extractor_needs_a_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval.keras_inception_weights.*nothing is downloaded"):
        inception.KerasInceptionV3(tmp_path / "inception_v3_notop.h5")


@pytest.mark.slow
def test_keras_extractor_loads_local_weights(tmp_path):
    import keras

    reference = keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3)
    )
    weights = tmp_path / "inception.weights.h5"
    reference.save_weights(weights)
    extractor = inception.KerasInceptionV3(weights)
    images = np.random.default_rng(10).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    features = extractor(images)
    assert features.shape == (2, 2048)
    expected = reference(images.astype(np.float32) / 127.5 - 1.0, training=False)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


# --- folders and the command -----------------------------------------------------------------------

def write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def test_folder_features_batch_images_of_different_sizes(tmp_path, standin):
    extractor = inception.Inception2015(standin)
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 20), (20, 20), (31, 17), (20, 20)]]
    folder = write_images(tmp_path / "mixed", images)
    features = fid.extract_features(fid.image_files(folder), extractor, batch_size=2)
    np.testing.assert_allclose(features, np.concatenate([extractor(i[None]) for i in images]), atol=1e-5)


def test_fid_command_on_identical_and_different_folders(tmp_path, standin, capsys):
    rng = np.random.default_rng(12)
    real = rng.integers(0, 256, (12, 24, 24, 3), dtype=np.uint8)
    write_images(tmp_path / "real", real)
    write_images(tmp_path / "copy", real)
    write_images(tmp_path / "dark", real // 4)
    args = ["fid", "--real", str(tmp_path / "real"), "eval.extractor=inception-2015",
            f"eval.inception_graph={standin}", "eval.kid_subsets=5"]
    assert evaluation_main(args + ["--fake", str(tmp_path / "copy")]) == 0
    same = json.loads(capsys.readouterr().out)
    assert abs(same["fid"]) < 1e-6 and same["num_real"] == same["num_fake"] == 12
    assert same["extractor"] == "inception-2015"
    assert evaluation_main(args + ["--fake", str(tmp_path / "dark")]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] > 0.1

    folders = ["fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "copy")]
    assert evaluation_main(folders) == 2
    assert "no feature extractor: give eval.extractor=inception-2015" in capsys.readouterr().err
    assert evaluation_main(folders + ["eval.extractor=inception-2015"]) == 2
    assert "given: pass its local path with eval.inception_graph" in capsys.readouterr().err
    assert evaluation_main(args + ["--fake", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_fid_command_options_reach_the_computation(tmp_path, standin, capsys, monkeypatch):
    rng = np.random.default_rng(13)
    real = write_images(tmp_path / "real", rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    fake = write_images(tmp_path / "fake", rng.integers(0, 128, (9, 16, 16, 3), dtype=np.uint8))
    batches, build_extractor = [], inception.build_extractor

    def recording(*args):
        extractor = build_extractor(*args)

        def counted(images):
            batches.append(len(images))
            return extractor(images)

        counted.name = extractor.name
        return counted

    monkeypatch.setattr(inception, "build_extractor", recording)
    config = tmp_path / "eval.yaml"  # --config gives the defaults, overrides win
    config.write_text("eval: {extractor: inception-2015, batch_size: 4, kid_subsets: 3, kid_subset_size: 4}\n")
    args = ["fid", "--real", str(real), "--fake", str(fake), "--config", str(config), f"eval.inception_graph={standin}"]
    assert evaluation_main(args + ["eval.batch_size=5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert batches == [5, 5, 2, 5, 4]  # 12 real, then 9 fake images, 5 per extractor call

    extractor = inception.Inception2015(standin)
    x, y = (fid.extract_features(fid.image_files(f), extractor) for f in (real, fake))
    assert result["kid"] == pytest.approx(fid.kid_from_features(x, y, subsets=3, subset_size=4)[0], rel=1e-6)
    assert result["kid_std"] > 0  # subsets of 4 of the 9 and 12 images differ
    assert evaluation_main(args + ["eval.kid_subsets=1", "eval.kid_subset_size=1000"]) == 0
    whole = json.loads(capsys.readouterr().out)  # one subset of min(1000, 12, 9) = 9 images
    assert whole["kid_std"] == 0.0 and batches[5:] == [4, 4, 4, 4, 4, 1]
    assert whole["kid"] == pytest.approx(fid.kid_from_features(x, y, subsets=1, subset_size=1000)[0], rel=1e-6)


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.extractor=vgg", "'eval.extractor' must be one of none, inception-2015, keras-inceptionv3; got 'vgg'"),
        ("eval.kid_subset_size=1", "'eval.kid_subset_size' must be >= 2; got 1"),
        ("eval.kid_subsets=0", "'eval.kid_subsets' must be >= 1; got 0"),
        ("eval.batch_size=x", "'eval.batch_size' must be of type int, got 'x'"),
        ("eval.kid_subset=5", "unknown config key 'eval.kid_subset'. Did you mean eval.kid_subsets"),
    ],
)
def test_fid_command_names_bad_options(tmp_path, override, message, capsys):
    args = ["fid", "--real", str(tmp_path), "--fake", str(tmp_path), "eval.extractor=inception-2015", override]
    assert evaluation_main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag, override", [("--kid_subset_size", "eval.kid_subset_size=10"),
                                            ("--inception_graph", "eval.inception_graph=10")])
def test_fid_command_replaced_flags_name_their_override(flag, override, capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluation_main(["fid", "--real", "a", "--fake", "b", flag, "10"])
    assert exit_.value.code == 2
    assert f"{flag} is now a config override: write {override}" in capsys.readouterr().err

"""Models.bss against mir_eval's bss_eval_sources (no permutation) on synthetic signals."""
import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from Models.bss import ROUNDING_NOISE_DB, bss_eval_sources, evaluate_in_parallel

SAMPLE_RATE = 8192
TOLERANCE_DB = 0.01


def mir_eval_scores(references: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    from mir_eval.separation import bss_eval_sources as reference_implementation

    with warnings.catch_warnings():  # mir_eval announces its deprecation on every call
        warnings.simplefilter("ignore", FutureWarning)
        return np.array(reference_implementation(references, estimates, compute_permutation=False)[:3])


def make_references(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """[white noise, three tones], both of unit power."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * frequency * time + phase)
                for frequency, phase in ((440.0, 0.0), (660.0, 1.0), (1234.0, 2.0)))
    references = np.stack([rng.standard_normal(len(time)), tones])
    return references / np.sqrt(np.mean(references ** 2, axis=1, keepdims=True))


def leakage(references, rng):
    return references + np.array([[0.0, 0.3], [0.2, 0.0]]) @ references + 0.05 * rng.standard_normal(references.shape)


def short_filters(references, rng):
    filtered = [lfilter([1.0, 0.5, -0.2], [1.0], references[0]), lfilter([0.7, 0.0, 0.3], [1.0], references[1])]
    return np.stack(filtered) + 0.02 * rng.standard_normal(references.shape)


def added_noise(references, rng):
    return references + np.array([[0.5], [0.1]]) * rng.standard_normal(references.shape)


def filtered_leakage_and_noise(references, rng):
    leaked = short_filters(references, rng)[::-1] * 0.1 + references
    return leaked + 0.3 * rng.standard_normal(references.shape)


@pytest.mark.parametrize("distort", [leakage, short_filters, added_noise, filtered_leakage_and_noise])
def test_matches_mir_eval(distort):
    references = make_references()
    estimates = distort(references, np.random.default_rng(1))
    expected = mir_eval_scores(references, estimates)
    assert np.max(np.abs(np.array(bss_eval_sources(references, estimates)) - expected)) < TOLERANCE_DB


def test_mixture_of_equal_power_sources_scores_about_zero_sdr():
    references = make_references()
    mixtures = np.stack([references.sum(axis=0)] * 2)
    sdr, sir, sar = bss_eval_sources(references, mixtures)
    assert np.all(np.abs(sdr) < 0.5) and np.all(np.abs(sir) < 0.5)
    # the mixture lies in the references' span: its SAR is rounding noise in both implementations
    assert np.all(sar > 100)
    expected_sdr, expected_sir, _ = mir_eval_scores(references, mixtures)
    assert np.max(np.abs(np.concatenate([sdr - expected_sdr, sir - expected_sir]))) < TOLERANCE_DB


def test_perfect_estimates_score_very_high_never_nan():
    references = make_references(seconds=1.0)
    scores = np.array(bss_eval_sources(references, references))
    assert not np.any(np.isnan(scores)) and np.all(scores > 100)


def test_silent_reference_is_named():
    references = make_references(seconds=1.0)
    references[1] = 0.0
    with pytest.raises(ValueError, match=r"reference source\(s\) \[1\]"):
        bss_eval_sources(references, make_references(seconds=1.0))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="as many samples"):
        bss_eval_sources(make_references(seconds=1.0), make_references(seconds=0.5))
    references = make_references(seconds=1.0)
    with pytest.raises(ValueError, match="at most as many estimates"):
        bss_eval_sources(references[:1], references)


def test_fewer_estimates_score_like_the_leading_rows_of_a_full_evaluation():
    references = make_references(seconds=1.0)
    estimates = filtered_leakage_and_noise(references, np.random.default_rng(4))
    full, leading = bss_eval_sources(references, estimates), bss_eval_sources(references, estimates[:1])
    for full_metric, leading_metric in zip(full, leading):
        np.testing.assert_allclose(leading_metric, full_metric[:1], atol=1e-9)


def test_parallel_gives_sequential_scores_in_order():
    rng = np.random.default_rng(2)
    jobs = []
    for seed, noise_level in enumerate((0.1, 0.5, 1.0, 2.0)):
        references = make_references(seconds=2.0, seed=seed)
        jobs.append((references, references + noise_level * rng.standard_normal(references.shape)))
    sequential = [bss_eval_sources(references, estimates) for references, estimates in jobs]
    parallel = evaluate_in_parallel(jobs, workers=2)
    assert len(parallel) == len(jobs)
    for expected, scores in zip(sequential, parallel):
        np.testing.assert_allclose(np.array(scores), np.array(expected), atol=1e-9)


def test_parallel_timeout_raises_instead_of_waiting():
    references = make_references(seconds=2.0)
    with pytest.raises(TimeoutError):
        evaluate_in_parallel([(references, references[::-1] + references)] * 4, workers=2, timeout=1e-6)


def test_parallel_reraises_a_job_error():
    references = make_references(seconds=1.0)
    silent = references.copy()
    silent[0] = 0.0
    with pytest.raises(ValueError, match="silent"):
        evaluate_in_parallel([(references, references + 0.1), (silent, references)], workers=2)


def test_museval_v4_medians_agree_with_whole_signal_scores_for_stationary_distortion():
    from Models.bss import museval_v4

    references = make_references(seconds=4.0)
    estimates = added_noise(references, np.random.default_rng(5))
    v3, v4 = bss_eval_sources(references, estimates), museval_v4(references, estimates, window=SAMPLE_RATE)
    assert all(metric.shape == (2,) for metric in v4)
    for metric in (0, 2):  # SDR and SAR: the same added noise in every 1 s window as in the whole signal
        np.testing.assert_allclose(v4[metric], v3[metric], atol=0.5)


def test_several_estimates_of_one_source_score_as_each_would_alone():
    references = make_references(seconds=1.0)
    rng = np.random.default_rng(6)
    estimates = np.stack([references[0] + 0.3 * references[1], references.sum(axis=0),
                          short_filters(references, rng)[0], added_noise(references, rng)[1]])
    targets = [0, 0, 0, 1]
    together = np.array(bss_eval_sources(references, estimates, targets=targets))
    for column, target in enumerate(targets):
        # mir_eval scores estimate j against reference j: put the estimate in its target's row
        rows = references + 0.1 * rng.standard_normal(references.shape)
        rows[target] = estimates[column]
        expected = mir_eval_scores(references, rows)[:, target]
        # above ROUNDING_NOISE_DB (the mixture's SAR) both figures are rounding noise
        np.testing.assert_allclose(np.minimum(together[:, column], ROUNDING_NOISE_DB),
                                   np.minimum(expected, ROUNDING_NOISE_DB), atol=TOLERANCE_DB)


@pytest.mark.parametrize("targets", [[0, 2], [0], [0.0, 1.0]])
def test_targets_must_name_a_reference_per_estimate(targets):
    references = make_references(seconds=1.0)
    with pytest.raises(ValueError, match="targets must name one of the 2 references for each of the 2 estimates"):
        bss_eval_sources(references, references + 0.1, targets=targets)

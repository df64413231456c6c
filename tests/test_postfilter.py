"""Post-filters (Models/postfilter.py): soft mask and multichannel Wiener filtering."""
import norbert
import numpy as np
import pytest

from Models.postfilter import BLOCK_FRAMES, PostFilter, expectation_maximisation


def _random_sources(rng, sources=2, channels=2, bins=33, frames=40):
    """Complex source spectrograms (channels, bins, frames), each panned to its own side and
    with its own spectral envelope."""
    result = {}
    for index in range(sources):
        envelope = np.exp(-((np.arange(bins) - (index + 1) * bins / (sources + 1)) / 6.0) ** 2)[:, None]
        signal = envelope * (rng.standard_normal((bins, frames)) + 1j * rng.standard_normal((bins, frames)))
        pan = np.linspace(0.1, 0.9, sources)[index] if channels > 1 else 0.5
        gains = np.array([np.sqrt(1 - pan), np.sqrt(pan)])[:channels]
        result[f"s{index}"] = (gains[:, None, None] * signal[None]).astype(np.complex64)
    return result


def _sdr(reference, estimate):
    return 10 * np.log10(np.sum(np.abs(reference) ** 2) / np.sum(np.abs(reference - estimate) ** 2))


@pytest.mark.parametrize("name", ["softmask", "wiener"])
def test_softmask_and_wiener_estimates_sum_to_the_mixture(name):
    rng = np.random.default_rng(0)
    sources = _random_sources(rng, sources=3)
    mixture = sum(sources.values())
    magnitudes = {key: np.abs(value) * rng.uniform(0.5, 1.5, value.shape) for key, value in sources.items()}
    magnitudes["s0"][:, :5] = 0.0  # bins where one estimate is silent
    for key in magnitudes:
        magnitudes[key][:, 10, :] = 0.0  # bins where every estimate is silent
    estimates = PostFilter(name, wiener_iterations=2).apply(magnitudes, mixture)
    np.testing.assert_allclose(sum(estimates.values()), mixture, atol=1e-4 * np.abs(mixture).max())


def test_wiener_of_one_source_is_the_mixture():
    rng = np.random.default_rng(1)
    mixture = _random_sources(rng, sources=1)["s0"]
    [estimate] = PostFilter("wiener", wiener_iterations=3).apply({"only": np.abs(mixture) * 0.3}, mixture).values()
    np.testing.assert_allclose(estimate, mixture, atol=1e-4 * np.abs(mixture).max())


@pytest.mark.parametrize("channels, iterations", [(1, 1), (2, 1), (2, 3)])
def test_wiener_expectation_maximisation_equals_norbert(channels, iterations):
    rng = np.random.default_rng(2)
    sources = _random_sources(rng, sources=3, channels=channels, frames=BLOCK_FRAMES // 4)
    mixture = sum(sources.values())
    magnitudes = {key: np.abs(value) * rng.uniform(0.5, 1.5, value.shape) for key, value in sources.items()}
    ours = expectation_maximisation(magnitudes, mixture, iterations)
    # norbert: (frames, bins, channels[, sources])
    theirs = norbert.wiener(np.stack([magnitudes[key].T for key in sources], axis=-1).astype(np.float32),
                            mixture.T, iterations=iterations, use_softmask=False)
    # norbert runs in float32, whose rounding the iterations amplify (1.5e-4 of the mixture's peak
    # after three on an AVX2 machine, 0.02% of the values); norbert in float64, whose epsilon and so
    # regularisation differ, is 4e-3 to 1.5e-2 of the peak away
    for index, key in enumerate(sources):
        np.testing.assert_allclose(ours[key], theirs[..., index].T, atol=1e-3 * np.abs(mixture).max())


def test_wiener_improves_on_the_mixture_phase():
    """Estimates with the right magnitudes up to 30 % errors: Wiener filtering with the
    sources' spatial positions comes closer to them than each estimate with the mixture's phase."""
    rng = np.random.default_rng(3)
    sources = _random_sources(rng, frames=200)
    mixture = sum(sources.values())
    magnitudes = {key: np.abs(value) * rng.uniform(0.7, 1.3, value.shape) for key, value in sources.items()}
    plain = PostFilter("none").apply(magnitudes, mixture)
    filtered = PostFilter("wiener", wiener_iterations=2).apply(magnitudes, mixture)
    for key, reference in sources.items():
        assert _sdr(reference, filtered[key]) > _sdr(reference, plain[key]) + 1.0, key


def test_wiener_filters_the_same_blocks_whole_or_in_pieces():
    rng = np.random.default_rng(4)
    sources = _random_sources(rng, frames=2 * BLOCK_FRAMES + 17)
    mixture = sum(sources.values())
    magnitudes = {key: np.abs(value) for key, value in sources.items()}
    postfilter = PostFilter("wiener")
    whole = postfilter.apply(magnitudes, mixture)
    pieces = [postfilter.apply({key: value[..., start:start + BLOCK_FRAMES] for key, value in magnitudes.items()},
                               mixture[..., start:start + BLOCK_FRAMES]) for start in range(0, 3 * BLOCK_FRAMES, BLOCK_FRAMES)]
    for key in sources:
        np.testing.assert_array_equal(whole[key], np.concatenate([piece[key] for piece in pieces], axis=-1))


def test_none_keeps_each_magnitude_with_the_mixture_phase_and_silence_silent():
    mixture = np.array([[[1 + 1j, 0, -2]]], np.complex64)
    [estimate] = PostFilter("none").apply({"a": np.array([[[2.0, 5.0, 1.0]]])}, mixture).values()
    np.testing.assert_allclose(estimate, [[[np.sqrt(2) * (1 + 1j), 0, -1]]], rtol=1e-6)


@pytest.mark.parametrize("settings, message", [
    (dict(name="wiener2"), "Config key `postfilter`: unknown post-filter 'wiener2'; choose one of"),
    (dict(name="softmask", softmask_power=0), "`softmask_power` must be positive"),
    (dict(name="wiener", wiener_iterations=1.5), "`wiener_iterations` must be a whole number"),
])
def test_bad_post_filter_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        PostFilter(**settings)

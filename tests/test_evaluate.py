import numpy as np
import pytest

from Evaluate import bss_scores, summarise


def _signals(length=8192 * 2, seed=0):
    rng = np.random.default_rng(seed)
    return {"accompaniment": rng.normal(0, 0.1, length), "voice": rng.normal(0, 0.1, length)}


def test_unprocessed_mixture_has_zero_nsdr_by_definition_and_perfect_estimates_score_high():
    references = _signals()
    mixture = references["accompaniment"] + references["voice"]
    unprocessed = bss_scores(references, {name: mixture for name in references})
    perfect = bss_scores(references, {name: signal + 1e-4 * np.random.default_rng(1).normal(size=signal.size)
                                      for name, signal in references.items()})
    for name in references:
        assert abs(unprocessed[name]["SDR"]) < 1.0  # equal-power sources: mixture SDR about 0 dB
        assert perfect[name]["SDR"] > 40 and perfect[name]["SIR"] > 40


def test_silent_reference_is_left_out_and_has_no_sir():
    references = _signals()
    references["voice"] = np.zeros_like(references["voice"])
    scores = bss_scores(references, {"accompaniment": references["accompaniment"], "voice": references["voice"]})
    assert set(scores) == {"accompaniment"} and set(scores["accompaniment"]) == {"SDR", "SAR"}


def test_summary_ignores_tracks_where_a_metric_is_undefined():
    results = [{"accompaniment": {"SDR": 1.0, "SIR": 5.0, "SAR": 2.0, "NSDR": 0.5, "NSIR": 1.0},
                "voice": {"SDR": 3.0, "SIR": 6.0, "SAR": 4.0, "NSDR": 2.0, "NSIR": 2.0}},
               {"accompaniment": {"SDR": 3.0, "SAR": 4.0, "NSDR": 1.5}, "silent": ["voice"]}]
    summary = summarise(results, ("accompaniment", "voice"))
    assert summary["accompaniment"]["tracks"] == 2 and summary["voice"]["tracks"] == 1
    assert summary["accompaniment"]["median_SDR"] == pytest.approx(2.0)
    assert summary["accompaniment"]["median_SIR"] == pytest.approx(5.0)  # the silent-voice track has none

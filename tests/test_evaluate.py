import os

import numpy as np
import pytest

from Models.scoring import bss_scores, summarise


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


def test_evaluate_experiment_writes_json_pickle_and_refuses_to_overwrite(tiny_config, tmp_path, caplog):
    import json
    import logging
    import pickle

    from Evaluate import ex as evaluation
    from Training import ex as training

    trained = training.run(config_updates=dict(tiny_config, phases=["supervised"], max_epochs=1))
    checkpoint = trained.info["checkpoint_dir"]
    with caplog.at_level(logging.INFO):
        run = evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": str(tmp_path / "eval_runs")})
    json_path = os.path.join(checkpoint, "evaluation", "best_supervised_test.json")
    with open(json_path) as handle:
        text = handle.read()
    report = json.loads(text)
    # The instrumental test song: its accompaniment equals the mixture, whose SDR is no baseline.
    assert "Infinity" not in text and "NaN" not in text
    instrumental = next(track for track in report["tracks"] if track["silent"] == ["voice"])
    assert "NSDR" not in instrumental["accompaniment"] and "NSDR" in instrumental["undefined"]["accompaniment"]
    overall = report["summary"]["all"]
    assert (overall["voice"]["count_SDR"], overall["accompaniment"]["count_SDR"]) == (1, 2)
    assert overall["accompaniment"]["count_NSDR"] == 1
    assert "voice: median SDR" in caplog.text and "dB over 1 songs" in caplog.text
    assert run.result["voice_count_SDR"] == 1 and run.result["voice_failed"] == 0
    with open(json_path.replace(".json", ".pkl"), "rb") as handle:
        assert pickle.load(handle) == report
    training_scores = trained.info["results"]["supervised"]["test_tracks"]
    assert report["tracks"] == training_scores  # Training.py and Evaluate.py score alike
    assert set(report["summary"]) == {"all", "DemoPaired", "DemoExtra"}
    assert run.result["voice_median_SDR"] == report["summary"]["all"]["voice"]["median_SDR"]
    assert "best_supervised_test.json" in os.listdir(tmp_path / "eval_runs" / str(run._id))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None})
    evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "overwrite": True})

    # BSS Eval v4 (museval) beside it, in a report of its own
    v4 = evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "protocol": "museval_v4"})
    with open(os.path.join(checkpoint, "evaluation", "best_supervised_test_museval_v4.json")) as handle:
        v4_report = json.load(handle)
    assert v4_report["protocol"] == "museval_v4" and len(v4_report["tracks"]) == len(report["tracks"])
    assert np.isfinite(v4.result["voice_median_SDR"]) and np.isfinite(v4.result["accompaniment_median_NSDR"])
    with pytest.raises(ValueError, match="`protocol` must be one of"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "protocol": "v5"})
    with pytest.raises(ValueError, match="detection_threshold set, but .* holds a separator"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "detection_threshold": 0.5,
                                       "output_dir": str(tmp_path / "detection")})

    # the paper's protocol scores the raw magnitudes unless a post-filter is asked for
    assert report["postfilter"]["name"] == "none"
    wiener = evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "postfilter": "wiener",
                                            "output_dir": str(tmp_path / "wiener")})
    with open(tmp_path / "wiener" / "best_supervised_test.json") as handle:
        assert json.load(handle)["postfilter"] == {"name": "wiener", "softmask_power": 1.0, "wiener_iterations": 1}
    assert np.isfinite(wiener.result["voice_median_SDR"])
    with pytest.raises(ValueError, match="Config key `postfilter`: unknown post-filter 'wiener2'"):
        evaluation.run(config_updates={"checkpoint": checkpoint, "run_dir": None, "postfilter": "wiener2"})


def test_compare_table_lists_differing_keys_best_first(tiny_config):
    from tracking.compare import compare_runs, comparison_table
    from Training import ex as training

    for alpha in (0.5, 0.001):
        training.run(config_updates=dict(tiny_config, phases=["supervised"], max_epochs=1, alpha=alpha))
    header, rows = comparison_table(tiny_config["run_dir"])
    assert header == ["run", "status", "alpha", "supervised accompaniment SDR", "supervised voice SDR"]
    assert [row[1] for row in rows] == ["COMPLETED", "COMPLETED"] and {row[2] for row in rows} == {"0.5", "0.001"}
    # each median with the number of test songs behind it: 2, one of them instrumental
    assert all(row[3].endswith(" (n=2)") and row[4].endswith(" (n=1)") for row in rows)
    voice = [float(row[4].split()[0]) for row in rows]
    assert voice == sorted(voice, reverse=True)
    assert compare_runs(tiny_config["run_dir"]).splitlines()[0].split()[:3] == ["run", "status", "alpha"]
    with pytest.raises(FileNotFoundError, match="No Sacred runs"):
        compare_runs(tiny_config["model_base_dir"])


def test_separate_command_end_to_end_on_wav_and_mp3(tiny_config, tmp_path):
    import shutil

    import soundfile

    from Evaluate import ex as evaluation
    from Training import ex as training

    trained = training.run(config_updates=dict(tiny_config, phases=["supervised"], max_epochs=1))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "tone_440hz_2s.mp3"), inputs / "tone.mp3")
    soundfile.write(inputs / "noise.wav", np.random.default_rng(0).uniform(-0.3, 0.3, (30000, 1)), 22050)
    updates = {"checkpoint": trained.info["checkpoint_dir"], "inputs": [str(inputs)],
               "output_dir": str(tmp_path / "out")}
    run = evaluation.run("separate", config_updates=updates)
    assert sorted(os.path.relpath(path, tmp_path / "out") for path in run.result) == [
        "noise/accompaniment.wav", "noise/voice.wav", "tone/accompaniment.wav", "tone/voice.wav"]
    voice = soundfile.info(str(tmp_path / "out" / "tone" / "voice.wav"))
    assert (voice.samplerate, voice.channels) == (22050, 2)
    assert soundfile.info(str(tmp_path / "out" / "noise" / "voice.wav")).frames == 30000
    with pytest.raises(FileExistsError, match="overwrite=True"):
        evaluation.run("separate", config_updates=updates)
    with pytest.raises(ValueError, match="needs checkpoint, inputs and output_dir"):
        evaluation.run("separate", config_updates={"checkpoint": updates["checkpoint"]})

    # an unreadable file among new ones: the others are separated, the command fails at the end
    (inputs / "broken.wav").write_bytes(b"RIFF\x00\x01junk")
    soundfile.write(inputs / "more.wav", np.random.default_rng(1).uniform(-0.3, 0.3, (9000, 1)), 8000)
    with pytest.raises(SystemExit) as exit_status:
        evaluation.run("separate", config_updates=dict(updates, skip_existing=True))
    assert exit_status.value.code == 1 and sorted(os.listdir(tmp_path / "out")) == ["more", "noise", "tone"]


def _track(tmp_path, signals: dict[str, np.ndarray], name="song"):
    import soundfile

    from Datasets import audio
    from Datasets.conversions import SeparationTrack

    samples = {}
    for role, signal in signals.items():
        soundfile.write(tmp_path / f"{name}_{role}.wav", signal, 8192, subtype="FLOAT")
        samples[role] = audio.info(tmp_path / f"{name}_{role}.wav")
    return SeparationTrack(name, "test", samples["mixture"],
                           {"accompaniment": samples["accompaniment"], "voice": samples["voice"]})


def _tiny_separator(silent_voice: bool = False):
    """A 2-layer U-Net at n_fft 64 whose estimates are audible (non-negative output kernels), or
    whose voice output is all zeros (log1p magnitude 0 everywhere)."""
    import keras

    from Models.separator import build_separator

    keras.utils.set_random_seed(0)
    separator = build_separator(2, 33, base_filters=2)
    for name in ("accompaniment", "voice"):
        layer = separator.get_layer(name)
        weights = [np.abs(weight) + 0.01 for weight in layer.get_weights()]
        layer.set_weights([np.zeros_like(weight) for weight in weights] if silent_voice and name == "voice"
                          else weights)
    return separator


def _evaluate(tracks, model):
    from Datasets.features import SpectrogramSettings
    from Models.scoring import evaluate_tracks
    from Models.separation import Separator
    from Models.shapes import UnetGeometry

    return evaluate_tracks(Separator(model, SpectrogramSettings(8192, 64, 32), UnetGeometry(2, 33),
                                     ("accompaniment", "voice")), tracks)


def test_references_of_different_lengths_are_trimmed_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    track = _track(tmp_path, {"mixture": rng.uniform(-0.2, 0.2, 8192 * 2),
                              "accompaniment": rng.uniform(-0.2, 0.2, 8192 * 2 - 300),
                              "voice": rng.uniform(-0.2, 0.2, 8192 * 2)}, name="uneven")
    results = _evaluate([track], _tiny_separator())
    assert "differ in length" in caplog.text and "uneven" in caplog.text
    assert results[0]["silent"] == [] and results[0]["failed"] == []
    assert all(np.isfinite(results[0][name]["SDR"]) for name in ("accompaniment", "voice"))


def test_instrumental_song_has_no_infinite_nsdr(tmp_path):
    """Case 1 of the reliability issue: the accompaniment of an instrumental song equals its
    mixture, so the unprocessed mixture scores +inf SDR (or 150 dB of rounding noise) and NSDR
    cannot be defined. It is left out with its reason; nothing infinite reaches the scores, the
    summary or the JSON."""
    import json

    from Models.scoring import summarise

    rng = np.random.default_rng(1)
    accompaniment = rng.uniform(-0.2, 0.2, 8192 * 2)
    voice = rng.uniform(-0.2, 0.2, 8192 * 2)
    instrumental = _track(tmp_path, {"mixture": accompaniment, "accompaniment": accompaniment,
                                     "voice": np.zeros_like(voice)}, name="instrumental")
    song = _track(tmp_path, {"mixture": accompaniment + voice, "accompaniment": accompaniment, "voice": voice})
    results = _evaluate([instrumental, song], _tiny_separator())
    assert results[0]["silent"] == ["voice"] and "voice" not in results[0]
    assert set(results[0]["accompaniment"]) == {"SDR", "SAR"}  # no NSDR, and no SIR without a second source
    assert "unprocessed mixture equals this source's reference" in results[0]["undefined"]["accompaniment"]["NSDR"]
    assert {"SDR", "SIR", "SAR", "NSDR", "NSIR"} == set(results[1]["accompaniment"]) and "undefined" not in results[1]
    summary = summarise(results, ("accompaniment", "voice"))
    assert summary["accompaniment"]["count_SDR"] == 2 and summary["accompaniment"]["count_NSDR"] == 1
    assert summary["voice"]["tracks"] == 1
    text = json.dumps({"tracks": results, "summary": summary}, allow_nan=False)  # raises on inf or NaN
    assert "Infinity" not in text and "NaN" not in text


def test_silent_estimate_counts_as_a_failed_song(tmp_path):
    """Case 2: a model that outputs a silent voice fails on every song with a voice. The songs
    are not dropped: the voice scores FAILED_SCORE_DB there, is counted as failed, and the
    accompaniment is still scored."""
    from Models.scoring import median_text, summarise
    from Models.bss import FAILED_SCORE_DB

    rng = np.random.default_rng(2)
    tracks = []
    for index in range(3):
        accompaniment, voice = rng.uniform(-0.2, 0.2, (2, 8192 * 2))
        tracks.append(_track(tmp_path, {"mixture": accompaniment + voice, "accompaniment": accompaniment,
                                        "voice": voice}, name=f"song{index}"))
    results = _evaluate(tracks, _tiny_separator(silent_voice=True))
    for result in results:
        assert result["failed"] == ["voice"]
        assert result["voice"]["SDR"] == FAILED_SCORE_DB and result["voice"]["NSDR"] < FAILED_SCORE_DB + 10
        assert np.isfinite(result["accompaniment"]["SDR"])
    summary = summarise(results, ("accompaniment", "voice"))
    assert summary["voice"] == {**summary["voice"], "tracks": 3, "failed": 3, "count_SDR": 3,
                                "median_SDR": FAILED_SCORE_DB}
    assert summary["accompaniment"]["failed"] == 0 and summary["accompaniment"]["count_SDR"] == 3
    assert median_text(summary["voice"]) == ("SDR -60.00 dB over 3 songs, 3 failed (silent estimate, "
                                             "scored -60 dB)")
    assert median_text(summary["accompaniment"]).endswith("dB over 3 songs")


def test_output_dir_under_a_file_names_the_file(tmp_path, tiny_config):
    """Case 7 of the reliability issue: the config key, the folder and the part that is a file,
    before anything is loaded or any run is recorded."""
    from Evaluate import ex as evaluation
    from Training import ex as training

    (tmp_path / "notes.txt").write_text("mine")
    below_a_file = str(tmp_path / "notes.txt" / "separated" / "today")
    message = f"`output_dir`: cannot use folder '{below_a_file}', because '{tmp_path / 'notes.txt'}' is a file"
    with pytest.raises(NotADirectoryError, match=message):
        evaluation.run("separate", config_updates={"checkpoint": "anything", "inputs": ["song.wav"],
                                                   "output_dir": below_a_file})
    with pytest.raises(NotADirectoryError, match=message):
        evaluation.run(config_updates={"checkpoint": "anything", "output_dir": below_a_file,
                                       "run_dir": str(tmp_path / "runs")})
    with pytest.raises(NotADirectoryError, match="`model_base_dir`.*notes.txt' is a file"):
        training.run(config_updates=dict(tiny_config, model_base_dir=str(tmp_path / "notes.txt" / "checkpoints")))
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "runs").exists()


class _NamedEstimates:
    """Stands in for a separator: each source's estimate is its own reference plus a little
    noise, handed out by name (as the engine's dict of outputs is)."""

    def __init__(self, references: dict[str, np.ndarray], source_names):
        self.references, self.source_names, self.path = references, tuple(source_names), "by-name"
        from Datasets.features import SpectrogramSettings

        self.settings = SpectrogramSettings(8192, 64, 32)

    def waveform(self, mixture, window_frames=None):
        noise = np.random.default_rng(0).normal(0, 1e-3, len(mixture))
        return {name: self.references[name][:len(mixture)] + noise for name in self.source_names}


def test_outputs_are_matched_to_references_by_name_not_position(tmp_path):
    from Models.scoring import evaluate_tracks

    rng = np.random.default_rng(5)
    accompaniment, voice = rng.uniform(-0.2, 0.2, (2, 8192 * 2))
    track = _track(tmp_path, {"mixture": accompaniment + voice, "accompaniment": accompaniment, "voice": voice})
    for order in (("accompaniment", "voice"), ("voice", "accompaniment")):
        separator = _NamedEstimates({"accompaniment": accompaniment, "voice": voice}, order)
        [result] = evaluate_tracks(separator, [track])
        assert result["accompaniment"]["SDR"] > 30 and result["voice"]["SDR"] > 30


def test_a_separator_of_other_sources_than_the_data_names_both_lists(tmp_path):
    from Models.scoring import evaluate_tracks

    signal = np.random.default_rng(6).uniform(-0.2, 0.2, 8192)
    track = _track(tmp_path, {"mixture": signal, "accompaniment": signal, "voice": signal})
    separator = _NamedEstimates({}, ("vocals", "drums", "bass", "other"))
    with pytest.raises(ValueError, match=r"separates \['vocals', 'drums', 'bass', 'other'\], but track 'song' of the "
                                         r"evaluation data has the sources \['accompaniment', 'voice'\]"):
        evaluate_tracks(separator, [track])

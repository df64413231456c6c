"""The `separate` console command (Models/cli.py), as installed by `pip install -e .` (.ci/install)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import REPO

COMMAND = shutil.which("separate", path=os.path.dirname(sys.executable))


def separate(*arguments, **options):
    assert COMMAND, "the `separate` command is not installed: run `pip install -e .` (bash .ci/install does)"
    return subprocess.run([COMMAND, *map(str, arguments)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, **options)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_demo):
    from Training import ex

    folder = tmp_path_factory.mktemp("cli")
    config = dict(use_demo_data=False, descriptors=tiny_demo, num_fft=64, num_hop=32, num_layers=2, num_frames=8,
                  base_filters=4, batch_size=4, epoch_it=2, max_epochs=1, phases=["supervised"], seed=5,
                  jit_compile=False, run_dir=None, model_base_dir=str(folder / "checkpoints"),
                  log_dir=str(folder / "logs"), cache_dir=str(folder / "cache"))
    return ex.run(config_updates=config).info["checkpoint_dir"]


def test_help_answers_without_importing_tensorflow():
    completed = separate("--help")
    assert completed.returncode == 0 and "--postfilter {none,softmask,wiener}" in completed.stdout
    imports = subprocess.run([sys.executable, "-c", "import sys; from Models import cli\n"
                              "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
                              "print('tensorflow' in sys.modules)"], capture_output=True, text=True, cwd=REPO)
    assert imports.stdout.strip().endswith("False")


def test_separates_wav_and_mp3_and_names_the_file_it_cannot_read(checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(os.path.join(REPO, "tests", "data", "tone_440hz_2s.mp3"), inputs / "tone.mp3")
    stereo = np.random.default_rng(0).uniform(-0.3, 0.3, (30000, 2)).astype(np.float32)
    soundfile.write(inputs / "noise.wav", stereo, 8192, subtype="FLOAT")  # the model's rate: nothing resampled
    (inputs / "notes.mp3").write_text("not audio")
    completed = separate(checkpoint, inputs, "-o", tmp_path / "out", "--postfilter", "wiener")
    assert completed.returncode == 1
    assert "notes.mp3" in completed.stderr and "1 of 3 input files could not be separated" in completed.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["noise", "tone"]
    sources = [soundfile.read(tmp_path / "out" / "noise" / f"{name}.wav", dtype="float32")[0]
               for name in ("accompaniment", "voice")]
    assert sources[0].shape == stereo.shape
    np.testing.assert_allclose(sum(sources), stereo, atol=1e-4)  # Wiener estimates sum to the mixture
    assert soundfile.info(str(tmp_path / "out" / "tone" / "voice.wav")).channels == 2

    (inputs / "notes.mp3").unlink()
    refused = separate(checkpoint, inputs, "-o", tmp_path / "out")
    assert refused.returncode == 1 and "is there from an earlier run: add --overwrite" in refused.stderr
    assert separate(checkpoint, inputs, "-o", tmp_path / "out", "--overwrite").returncode == 0


@pytest.mark.parametrize("arguments, message", [
    (["missing_checkpoint", "x.wav"], "Checkpoint 'missing_checkpoint' does not exist"),
    (["{not_a_checkpoint}", "x.wav"], "is not a checkpoint of this project"),
    (["{checkpoint}", "x.wav", "--postfilter", "wiener2"], "invalid choice: 'wiener2'"),
    (["{checkpoint}", "x.wav", "--wiener-iterations", "-1"], "`wiener_iterations` must be a whole number >= 0"),
])
def test_bad_arguments_are_named(checkpoint, tmp_path, arguments, message):
    (tmp_path / "junk.pkl").write_bytes(b"junk")
    arguments = [argument.format(checkpoint=checkpoint, not_a_checkpoint=tmp_path / "junk.pkl")
                 for argument in arguments]
    completed = separate(*arguments, "-o", tmp_path / "out")
    assert completed.returncode != 0 and message in completed.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_asked_for_where_there_is_none(checkpoint, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: the refusal cannot happen here")
    completed = separate(checkpoint, "x.wav", "-o", tmp_path / "out", "--device", "gpu")
    assert completed.returncode == 1 and "--device gpu, but TensorFlow sees no GPU here" in completed.stderr


def test_mask_options_are_checked_and_refused_for_a_separator(checkpoint, tmp_path, capsys):
    from Models import cli

    for option, message in ((["--mask-dilation", "4", "3"], "--mask-dilation needs positive odd sizes"),
                            (["--mask-exponent", "0"], "--mask-exponent must be positive"),
                            (["--background-gate-db", "-3"], "--background-gate-db must be a non-negative number"),
                            (["--detection-threshold", "1.5"], "--detection-threshold: must be a number in [0, 1] or "
                                                               "one of validation_eer, validation_false_alarms"),
                            (["--detection-false-alarm-rate", "ten"], "--detection-false-alarm-rate: must be a "
                                                                      "number in [0, 1], got 'ten'"),
                            (["--clip-statistics-weight", "auto"], "--clip-statistics-weight: must be a number in "
                                                                   "[0, 1] or one of validation, validation_per_class")):
        with pytest.raises(SystemExit) as exited:
            cli.main([checkpoint, "in.wav", "-o", str(tmp_path / "out"), *option])
        assert exited.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="apply to weak-label checkpoints; .* holds a separator"):
        cli.main([checkpoint, "in.wav", "-o", str(tmp_path / "out"), "--mask-dilation", "3", "3"])
    with pytest.raises(SystemExit, match="^separate: --detection-threshold, --clip-statistics-weight apply to "
                                         "weak-label checkpoints"):
        cli.main([checkpoint, "in.wav", "-o", str(tmp_path / "out"), "--detection-threshold", "0.5",
                  "--clip-statistics-weight", "validation"])
    assert not os.path.exists(tmp_path / "out")

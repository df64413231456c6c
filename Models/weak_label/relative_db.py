"""The `relative_db` front end: mel energies in decibels above each band's median over the clip.

    R(E)_t,f = (10 log10(E_t,f + 1e-10) - median_t' 10 log10(E_t',f + 1e-10)) / 20

on non-negative energies E (batch, frames, bands). A clip's steady background sits near 0 in
every band and what stands out of it is positive, whatever the recording's level and spectral
balance: an event at 0 dB event-to-background ratio rises well above its band's median, while
the background's own level and colour (another piece of music, another room) cancel. PCEN
normalises against a smoother that follows the signal within a second, so a sustained event
(a crash cymbal) fades into its own reference; the median stays the background's as long as an
event covers less than half of the clip. The division by 20 keeps the values near unit scale.
For an even number of frames the median is the upper of the two middle values.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from Models.weak_label.pcen import PCEN

ENERGY_FLOOR = 1e-10  # -100 dB: silent bins stay finite


@keras.saving.register_keras_serializable(package="weak_label")
class RelativeDecibels(keras.layers.Layer):
    """(batch, frames, bands) mel energies -> dB above each band's median over the frames, / 20."""

    def call(self, energies):
        decibels = 10.0 * tf.math.log(energies + ENERGY_FLOOR) / tf.math.log(tf.constant(10.0, energies.dtype))
        ordered = tf.sort(decibels, axis=1)
        median = ordered[:, tf.shape(ordered)[1] // 2][:, None, :]
        return (decibels - median) / 20.0

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="weak_label")
class PcenAndRelativeDecibels(keras.layers.Layer):
    """(batch, frames, bands) mel energies -> (batch, frames, bands, 2): PCEN and `RelativeDecibels`
    as two input maps of the mask model (`front_end="pcen_relative_db"`). PCEN follows the
    signal's recent level, so onsets stand out and the voices are told well, but a sustained
    event fades into its own reference; the clip's band medians keep a crash and where an event
    rises above the background, which is what separates. The convolutions see both."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pcen = PCEN(trainable=False, dtype="float32", name="pcen")
        self.relative_db = RelativeDecibels(dtype="float32", name="relative_db")

    def build(self, input_shape):
        self.pcen.build(input_shape)

    def call(self, energies):
        return keras.ops.stack([self.pcen(energies), self.relative_db(energies)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 2)

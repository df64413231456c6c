"""Per-channel energy normalisation (Wang et al. 2017) as a Keras layer.

    PCEN(E)_t = (E_t / (eps + M_t)^alpha + delta)^r - delta^r,   M_t = (1 - s) M_{t-1} + s E_t

on non-negative energies E (batch, frames, bands), band by band. The smoother starts from
librosa's state M_{-1} = 1 in every band (`scipy.signal.lfilter_zi`, the steady state for a
unit input), so fixed PCEN equals `librosa.pcen(S.T, gain=alpha, bias=delta, power=r, eps=eps,
b=s, max_size=1)` frame for frame. Starting from zero instead would divide the first frames by
about eps^alpha and blow them up.

Fixed PCEN keeps its parameters as constants. Trainable PCEN learns a, d, rho with
alpha = sigmoid(a), delta = exp(d), r = sigmoid(rho) (so alpha and r stay in (0, 1)),
initialised to the given values, optionally one of each per band. With `num_smoothers` K > 1
the smoother is a softmax-weighted mixture of K smoothers with fixed s_k = s / 2^k (k = 0..K-1,
each time constant twice the previous), the weights learned (trainable) or uniform (fixed);
the mixture weights are per band when `per_band` is set.

The recurrence runs without a loop over frames: the frames are cut into chunks of
`CHUNK_FRAMES`. The states entering the chunks follow the same recurrence with
(1 - s)^CHUNK_FRAMES, one product with a lower triangular matrix of its powers; then each
chunk's smoother is the product of a lower triangular matrix of powers (1 - s)^(i - j) with
the chunk's energies, plus (1 - s)^(i + 1) times the state entering it. Only non-negative
powers appear, so small factors underflow to 0 instead of overflowing. Work grows as
frames * CHUNK_FRAMES plus (frames / CHUNK_FRAMES)^2 (a 12 MB matrix for an hour at 31 frames/s).
Negative inputs (such as log-mel features) give NaN: PCEN takes energies.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

CHUNK_FRAMES = 64  # of 32, 64, 128: best or near it on CPU, with and without XLA, at 124 to 20000 frames


def _lag_powers(size, retain: tf.Tensor) -> tf.Tensor:
    """(smoothers, size, size): retain^(i - j) for i >= j, 0 above the diagonal."""
    lag = tf.range(size)[:, None] - tf.range(size)[None, :]
    powers = tf.pow(retain[:, None, None], tf.cast(tf.maximum(lag, 0), retain.dtype))
    return tf.where(lag >= 0, powers, tf.zeros_like(powers))


def exponential_smoothing(energies: tf.Tensor, smoothing: tf.Tensor) -> tf.Tensor:
    """M_t = (1 - s) M_{t-1} + s E_t along the frames of (batch, frames, bands), M_{-1} = 1,
    for each s in `smoothing` (smoothers,); returns (batch, smoothers, frames, bands)."""
    batch, frames, bands = tf.unstack(tf.shape(energies))
    num_smoothers = tf.shape(smoothing)[0]
    chunks = (frames + CHUNK_FRAMES - 1) // CHUNK_FRAMES
    # Zeros appended at the end cannot change the earlier frames of a causal filter.
    padded = tf.pad(energies, [[0, 0], [0, chunks * CHUNK_FRAMES - frames], [0, 0]])
    blocks = tf.reshape(padded, [batch, chunks, CHUNK_FRAMES, bands])
    retain = 1.0 - smoothing
    within = smoothing[:, None, None] * _lag_powers(CHUNK_FRAMES, retain)  # zero-state response inside a chunk
    chunk_ends = tf.einsum("sj,bcjf->bscf", within[:, -1], blocks)
    chunk_retain = retain ** CHUNK_FRAMES
    chunk_steps = tf.cast(tf.range(1, chunks + 1), energies.dtype)
    ends = (tf.einsum("scd,bsdf->bscf", _lag_powers(chunks, chunk_retain), chunk_ends)
            + tf.pow(chunk_retain[:, None], chunk_steps)[None, :, :, None])
    entering = tf.concat([tf.ones_like(ends[:, :, :1]), ends[:, :, :-1]], axis=2)  # M just before each chunk
    # One product per chunk of [energies; entering state] with [within | (1 - s)^(i + 1)]: XLA keeps the
    # product's result in memory, whereas fusing a separate sum into PCEN's exp/log chain ran 10x slower.
    carry = tf.pow(retain[:, None], tf.cast(tf.range(1, CHUNK_FRAMES + 1), energies.dtype))
    matrix = tf.concat([within, carry[:, :, None]], axis=2)
    inputs = tf.concat([tf.broadcast_to(blocks[:, None], [batch, num_smoothers, chunks, CHUNK_FRAMES, bands]),
                        entering[:, :, :, None, :]], axis=3)
    smoothed = tf.einsum("sij,bscjf->bscif", matrix, inputs)
    return tf.reshape(smoothed, [batch, num_smoothers, chunks * CHUNK_FRAMES, bands])[:, :, :frames]


def _logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


@keras.saving.register_keras_serializable(package="weak_label")
class PCEN(keras.layers.Layer):
    """PCEN of non-negative energies (batch, frames, bands); output of the same shape.

    `trainable` chooses the variant (constants or learned weights) and is what `get_config`
    records: a learned PCEN that is frozen later is reloaded unfrozen, with its learned values."""

    def __init__(self, smoothing: float = 0.04, alpha: float = 0.98, delta: float = 2.0, root: float = 0.5,
                 eps: float = 1e-6, trainable: bool = False, per_band: bool = False, num_smoothers: int = 1,
                 **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        values = dict(smoothing=smoothing, alpha=alpha, delta=delta, root=root, eps=eps, num_smoothers=num_smoothers)
        checks = {"smoothing": 0 < smoothing <= 1, "alpha": alpha >= 0, "delta": delta > 0, "root": root > 0,
                  "eps": eps > 0, "num_smoothers": isinstance(num_smoothers, int) and num_smoothers >= 1}
        if trainable:  # sigmoid(a) and sigmoid(rho) cannot reach 0 or 1
            checks.update(alpha=0 < alpha < 1, root=0 < root < 1)
        for argument, valid in checks.items():
            if not valid:
                raise ValueError(f"PCEN: invalid {argument}={values[argument]!r}; need 0 < smoothing <= 1, "
                                 f"alpha >= 0, delta > 0, root > 0, eps > 0, an integer num_smoothers >= 1, "
                                 f"and 0 < alpha, root < 1 when trainable.")
        if per_band and not trainable:
            raise ValueError("PCEN: per_band=True needs trainable=True; fixed parameters are the same in every band.")
        self.smoothing, self.alpha, self.delta, self.root, self.eps = smoothing, alpha, delta, root, eps
        self.learned, self.per_band, self.num_smoothers = trainable, per_band, num_smoothers
        self.smoothing_values = [smoothing / 2 ** index for index in range(num_smoothers)]

    def build(self, input_shape):
        bands = input_shape[-1]
        if self.per_band and bands is None:
            raise ValueError("PCEN: per_band=True needs the number of bands (the input's last axis) to be known.")
        if not self.learned:
            return
        shape = (bands,) if self.per_band else (1,)
        self.alpha_logit = self.add_weight(shape, keras.initializers.Constant(_logit(self.alpha)), name="alpha_logit")
        self.log_delta = self.add_weight(shape, keras.initializers.Constant(math.log(self.delta)), name="log_delta")
        self.root_logit = self.add_weight(shape, keras.initializers.Constant(_logit(self.root)), name="root_logit")
        if self.num_smoothers > 1:
            self.mixture_logits = self.add_weight((self.num_smoothers,) + shape, "zeros", name="mixture_logits")

    def call(self, energies):
        if self.learned:
            alpha, log_delta = tf.sigmoid(self.alpha_logit), self.log_delta
            root = tf.sigmoid(self.root_logit)
        else:
            alpha, log_delta, root = self.alpha, math.log(self.delta), self.root
        smoothed = exponential_smoothing(energies, tf.constant(self.smoothing_values, energies.dtype))
        if self.learned and self.num_smoothers > 1:
            smoother = tf.einsum("bstf,sf->btf", smoothed, tf.broadcast_to(
                tf.nn.softmax(self.mixture_logits, axis=0), [self.num_smoothers, tf.shape(energies)[-1]]))
        else:
            smoother = tf.reduce_mean(smoothed, axis=1)
        # librosa's log-space form: (E / (eps + M)^alpha / delta + 1)^r - 1, scaled by delta^r.
        normalised = energies * tf.exp(-alpha * tf.math.log(self.eps + smoother) - log_delta)
        return tf.exp(root * log_delta) * tf.math.expm1(root * tf.math.log1p(normalised))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing, "alpha": self.alpha, "delta": self.delta,
                "root": self.root, "eps": self.eps, "trainable": self.learned, "per_band": self.per_band,
                "num_smoothers": self.num_smoothers}

"""Weak-label joint separation-classification (Kong et al. 2018): a mask model and a pooling
classifier trained from clip labels only; the masks separate. `training.py` is what
Training.py runs; `model.py` (with `pcen.py`, `mask_model.py`, `pooling.py`) the network,
`solver.py` its training on the shared loop, `separation.py` separating and scoring events,
`tagging.py` the tagging metrics."""

"""Semi-supervised adversarial separation (Stoller et al. 2018): the U-Net separator trained on
paired tracks and, through one WGAN-GP critic per source, on unpaired mixtures and solo
recordings. `training.py` is what Training.py runs; `model.py` holds the losses and steps,
`critic.py` the critics and `solver.py` the two phases on the shared training loop."""

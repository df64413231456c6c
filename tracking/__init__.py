"""Experiment tracking: Sacred observers shared by Training.py and Evaluate.py."""

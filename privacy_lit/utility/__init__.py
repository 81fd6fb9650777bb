"""Turning black-box answers into losses and predictions."""

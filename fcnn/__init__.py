"""fcnn: a convolutional neural network library in plain NumPy, written as pure functions."""

__version__ = "0.1.0"

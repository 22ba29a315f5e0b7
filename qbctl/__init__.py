"""qbctl: the developer toolkit of the QB trading backend's data stack."""

__version__ = "0.1.0"

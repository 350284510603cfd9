"""spear_mm: continual pretraining with selective restoration via model merging."""

__version__ = "0.1.0"

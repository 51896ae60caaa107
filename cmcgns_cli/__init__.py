"""cmcgns: CM-CGNS pretraining and evaluation for chest X-rays and radiology reports."""

__version__ = "0.1.0"

"""hpcnb: Jupyter on an HPC compute node in one command."""

__version__ = "0.1.0"

"""dockershim-py: a CRI runtime that runs the kubelet's pods on Docker Engine."""

__version__ = "0.1.0"

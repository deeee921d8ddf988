"""Ragline: retrieval-augmented generation as a service.

The package is the shared Lambda layer (``layers/python/ragline``) and the embedded local stack.
The core talks only to the ports in :mod:`ragline.ports`; :mod:`ragline.factory` wires adapters.
"""

__version__ = "0.1.0"

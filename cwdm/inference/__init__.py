"""Inference: sampling options and flags, the synthesizer, completion plans, provenance records
and the pipeline behind ``cwdm sample``, ``cwdm auto``, the demo and the Python API."""

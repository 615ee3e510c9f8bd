"""cwdm: conditional wavelet diffusion models for 3D MRI contrast synthesis."""

__version__ = "0.1.0"


def __getattr__(name):  # the Python API, imported on first use (``import cwdm`` stays light)
    if name == "MissingModality":
        from .api import MissingModality

        return MissingModality
    if name == "Inpainting":
        from .inference.fill_api import Inpainting

        return Inpainting
    if name == "Insertion":
        from .inference.fill_api import Insertion

        return Insertion
    raise AttributeError(f"module 'cwdm' has no attribute {name!r}")

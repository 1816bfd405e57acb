"""minitransformer: attention, ViT, MLM, MIM, CLIP, DINO and DINOv2 from scratch.

A small reverse-mode autograd engine over NumPy (CPU) and CuPy (GPU), one code path for both.

    import minitransformer as mt
    from minitransformer import functional as F, nn

Importing this package is light: no matplotlib, scikit-learn or CuPy until they are used.
"""

from . import backend, functional, testing
from .autograd import (
    Function,
    Tensor,
    debug_mode,
    detect_anomaly,
    enable_grad,
    is_debug_mode,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    randn,
    set_grad_enabled,
    tensor,
    zeros,
    zeros_like,
)
from .backend import (
    Device,
    cuda_available,
    get_default_device,
    get_default_dtype,
    manual_seed,
    num_threads,
    pick_device,
    set_default_device,
    set_default_dtype,
    set_num_threads,
    to_numpy,
)

__version__ = "0.1.0"

__all__ = [
    "Device", "Function", "Tensor", "backend", "cuda_available", "debug_mode", "detect_anomaly",
    "enable_grad", "functional", "get_default_device", "get_default_dtype", "is_debug_mode",
    "is_grad_enabled", "manual_seed", "no_grad", "num_threads", "ones", "ones_like",
    "pick_device", "randn",
    "set_default_device", "set_default_dtype", "set_grad_enabled", "set_num_threads", "tensor",
    "testing", "to_numpy", "zeros", "zeros_like",
]

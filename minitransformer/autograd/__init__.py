"""The autograd engine: Tensor, Function, the backward walk, grad modes and gradcheck."""

from .engine import backward
from .function import Function
from .grad_mode import (
    debug_mode,
    detect_anomaly,
    enable_grad,
    is_debug_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor, as_tensor, ones, ones_like, randn, tensor, zeros, zeros_like

__all__ = [
    "Function", "GradcheckError", "Tensor", "as_tensor", "backward", "debug_mode",
    "detect_anomaly", "enable_grad", "gradcheck", "is_debug_mode", "is_grad_enabled", "no_grad",
    "ones", "ones_like", "randn", "set_grad_enabled", "tensor", "zeros", "zeros_like",
]

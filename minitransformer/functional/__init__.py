"""The ops. Every function takes Tensors (or arrays/scalars) and returns Tensors.

Primitives (each a Function with a hand-written backward):
    elementwise: add sub mul div neg pow exp log sqrt tanh sigmoid abs erf maximum minimum
                 where clip
    reduction:   sum mean max min sum_to
    shape:       reshape transpose broadcast_to concat split getitem to_device astype
    linalg:      matmul linear
Composites (a readable ``*_composed`` version, and a fused one where it pays):
    var, swapaxes, squeeze, unsqueeze, stack, relu, gelu, quick_gelu, softmax, log_softmax,
    logsumexp, layer_norm, normalize, dropout, cross_entropy, soft_cross_entropy,
    scaled_dot_product_attention
"""

from .activation import (
    gelu,
    gelu_composed,
    log_softmax,
    log_softmax_composed,
    logsumexp,
    logsumexp_composed,
    quick_gelu,
    relu,
    softmax,
    softmax_composed,
)
from .attention import (
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    scaled_dot_product_attention_composed,
)
from .dropout import dropout
from .elementwise import (
    abs,
    add,
    clip,
    div,
    erf,
    exp,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sigmoid,
    sqrt,
    sub,
    tanh,
    where,
)
from .linalg import linear, matmul
from .losses import cross_entropy, soft_cross_entropy
from .normalization import layer_norm, layer_norm_composed, normalize
from .reduction import max, mean, min, sum, sum_to, sum_to_shape, var
from .shape import (
    astype,
    broadcast_to,
    concat,
    expand,
    flatten,
    getitem,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    to_device,
    transpose,
    unsqueeze,
)

__all__ = [
    "abs", "add", "astype", "broadcast_to", "causal_mask", "clip", "concat", "cross_entropy",
    "div", "dropout", "erf", "exp", "expand", "flatten", "gelu", "gelu_composed", "getitem",
    "layer_norm", "layer_norm_composed", "linear", "log", "log_softmax", "log_softmax_composed",
    "logsumexp", "logsumexp_composed", "matmul", "max", "maximum", "mean", "min", "minimum",
    "mul", "neg", "normalize", "padding_mask", "pow", "quick_gelu", "relu", "reshape",
    "scaled_dot_product_attention", "scaled_dot_product_attention_composed", "sigmoid",
    "soft_cross_entropy", "softmax", "softmax_composed", "split", "sqrt", "squeeze", "stack",
    "sub", "sum", "sum_to", "sum_to_shape", "swapaxes", "tanh", "to_device", "transpose",
    "unsqueeze", "var", "where",
]

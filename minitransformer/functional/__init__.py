"""The ops. Every function takes Tensors (or arrays/scalars) and returns Tensors.

Primitives (each a Function with a hand-written backward):
    elementwise: add sub mul div neg pow exp log sqrt tanh sigmoid abs erf maximum minimum
                 where clip
    reduction:   sum mean max min sum_to
    shape:       reshape transpose broadcast_to concat split getitem to_device astype
    linalg:      matmul linear
    also:        relu, dropout (a fixed keep-mask)
Composed from primitives only:
    var, swapaxes, squeeze, unsqueeze, stack, flatten, quick_gelu, normalize
Composites, each in two versions (``tests/functional/test_fused_parity.py`` shows they agree):
    softmax, log_softmax, logsumexp, gelu, layer_norm, cross_entropy, soft_cross_entropy,
    scaled_dot_product_attention
  - ``*_composed`` (e.g. ``softmax_composed``): readable compositions of primitives; the
    engine derives their gradients.
  - the public name (e.g. ``softmax``): a fused Function with a hand-written backward, fewer
    passes over memory and fewer saved arrays.

The seam between the two: ``use_fused(enabled)`` is a context manager that makes every public
composite above run its composed version (``enabled=False``) or its fused one (``True``, the
default) inside the block; ``is_fused()`` reports the current setting::

    from minitransformer import functional as F
    with F.use_fused(False):
        out, probs = F.scaled_dot_product_attention(q, k, v)   # the composed graph

On the CPU, the fused softmax (also the attention's and the cross-entropies'), layer norm and
GELU run as loops compiled by Numba when it is installed (``pip install
"minitransformer[fast]"``, ``numba_kernels.py``); ``use_numba(False)`` switches to their NumPy
calls, and ``numba_kernels_for(array)`` says which one an array gets.

Data checks: ``cross_entropy`` (targets), ``getitem`` (integer index bounds) and
``nn.Embedding`` (ids) check the values of their inputs, on by default; on a GPU each check
is a device-to-host read, so a training loop that validated its data once runs its steps
inside ``use_data_checks(False)`` (``checks.py``; the CPU keeps its checks, which are free).

Raw-array helpers used by the fused ops: ``sum_keepdims``, ``dot_keepdims``, ``sum_to_shape``.
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
from .checks import check_values, data_checks_enabled, use_data_checks
from .dropout import bernoulli_keep_mask, dropout
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
from .fusion import is_fused, numba_kernels_for, use_fused, use_numba
from .linalg import linear, matmul
from .losses import (
    cross_entropy,
    cross_entropy_composed,
    soft_cross_entropy,
    soft_cross_entropy_composed,
)
from .normalization import layer_norm, layer_norm_composed, normalize
from .reduction import (
    dot_keepdims,
    max,
    mean,
    min,
    sum,
    sum_keepdims,
    sum_to,
    sum_to_shape,
    var,
)
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
    "abs", "add", "astype", "bernoulli_keep_mask", "broadcast_to", "causal_mask", "check_values",
    "clip", "concat", "cross_entropy", "cross_entropy_composed", "data_checks_enabled", "div",
    "dot_keepdims", "dropout", "erf", "exp",
    "expand", "flatten", "gelu", "gelu_composed", "getitem", "is_fused", "layer_norm",
    "layer_norm_composed", "linear", "log", "log_softmax", "log_softmax_composed", "logsumexp",
    "logsumexp_composed", "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "neg",
    "normalize", "numba_kernels_for", "padding_mask", "pow", "quick_gelu", "relu", "reshape",
    "scaled_dot_product_attention", "scaled_dot_product_attention_composed", "sigmoid",
    "soft_cross_entropy", "soft_cross_entropy_composed", "softmax", "softmax_composed", "split",
    "sqrt", "squeeze", "stack", "sub", "sum", "sum_keepdims", "sum_to", "sum_to_shape", "swapaxes",
    "tanh", "to_device", "transpose", "unsqueeze", "use_data_checks", "use_fused", "use_numba",
    "var", "where"
]

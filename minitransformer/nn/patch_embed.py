"""``PatchEmbed``: seed equation 5, $X_{patch} = W_E x + b_E$, for every P x P patch at once.

The real systems use ``Conv2d(C, D, kernel_size=P, stride=P)`` (timm, DINO, DINOv2); a stride-P
convolution is exactly a Linear on each patch flattened in (channel, row, col) order, which is
what this module does with a reshape and a transpose. Patches come out in raster order (row by
row), as the conv's ``flatten(2).transpose(1, 2)``.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor, as_tensor
from . import init
from .linear import Linear
from .module import Module

__all__ = ["PatchEmbed"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchEmbed(Module):
    """Image (B, C, H, W) -> patch tokens (B, N, D), N = (H/P)(W/P).

    ``proj`` is Linear(C*P*P, D): ``proj.weight`` is the conv weight (D, C, P, P) reshaped to
    (D, C*P*P) and transposed. Init: Xavier-uniform on that (C*P*P, D) view, as MAE's
    ``initialize_weights`` ("initialize patch_embed like nn.Linear"), zero bias. ``bias=False``
    is CLIP's ``conv1``.

    Any H, W divisible by P are accepted (multi-crop feeds smaller crops than ``img_size``).

    Images are channels-first (design §4, as torch's conv); a channels-last (B, H, W, C)
    batch is recognised and refused with a message saying so (``check_images``).

    Shapes: x (B, C, H, W) -> (B, (H/P)*(W/P), D).
    """

    def __init__(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int, dim: int,
                 bias: bool = True):
        super().__init__()
        H, W = _pair(img_size)
        if patch_size < 1 or H % patch_size or W % patch_size:
            raise ValueError(
                f"PatchEmbed: img_size {(H, W)} is not divisible by patch_size {patch_size}"
            )
        self.img_size, self.patch_size, self.in_chans, self.dim = (H, W), patch_size, in_chans, dim
        self.grid_size = (H // patch_size, W // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = Linear(in_chans * patch_size * patch_size, dim, bias=bias)
        init.xavier_uniform_(self.proj.weight)

    def _channels_last_hint(self, shape: tuple[int, ...]) -> str:
        return (f"the input {shape} looks like channels-last (B, H, W, C) with C = "
                f"{self.in_chans}, but the model expects (B, C, H, W): pass "
                "x.transpose(0, 3, 1, 2)")

    def grid(self, H: int, W: int) -> tuple[int, int]:
        """The patch grid (H/P, W/P) of an H x W image, or a ValueError naming the sizes
        (and the likely cause when W equals the channel count: a channels-last image)."""
        P = self.patch_size
        if H % P or W % P:
            if W == self.in_chans and H % P == 0:
                raise ValueError(
                    f"PatchEmbed: the input looks like channels-last (B, H, W, C) (its last "
                    f"axis, {W}, is the channel count, and {H}x{W} is not divisible by "
                    f"patch_size {P}), but the model expects (B, C, H, W): pass "
                    "x.transpose(0, 3, 1, 2)"
                )
            raise ValueError(f"PatchEmbed: image size {H}x{W} is not divisible by patch_size {P}")
        return H // P, W // P

    def check_images(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """Validate an image batch's shape (B, C, H, W) and return its patch grid (H/P, W/P).

        ValueError naming the shape for: not 4-D (a 3-D grey batch is told to add a channel
        axis), a channels-last (B, H, W, C) layout (last axis = ``in_chans`` where axis 1 is
        not), another channel count, or H, W not divisible by the patch size."""
        shape = tuple(int(n) for n in shape)
        if len(shape) != 4:
            hint = ""
            if len(shape) == 3 and self.in_chans == 1:
                hint = "; for grey images (B, H, W) add the channel axis: x[:, None]"
            raise ValueError(f"PatchEmbed: expected images (B, C, H, W), got shape {shape}{hint}")
        _, C, H, W = shape
        if C != self.in_chans:
            if W == self.in_chans:
                raise ValueError(f"PatchEmbed: {self._channels_last_hint(shape)}")
            raise ValueError(
                f"PatchEmbed: expected {self.in_chans} input channels, got {C} "
                f"(input shape {shape}, read as (B, C, H, W))"
            )
        return self.grid(H, W)

    def forward(self, x: Any) -> Tensor:
        x = as_tensor(x)
        gh, gw = self.check_images(x.shape)
        B, C = x.shape[:2]
        P = self.patch_size
        x = x.reshape(B, C, gh, P, gw, P)  # (B, C, gh, P_row, gw, P_col)
        x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P_row, P_col): raster patch order
        x = x.reshape(B, gh * gw, C * P * P)  # (B, N, C*P*P), each patch flattened (c, i, j)
        return self.proj(x)  # (B, N, D)

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, patch_size={self.patch_size}, in_chans={self.in_chans}"

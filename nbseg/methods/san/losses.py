"""SAN's objective, Eq. (5)-(9) and Fig. 2, as pure tensor functions. d(.,.) is the L2 loss (Fig. 2's caption:
"L_Rec and L_Con are the L2 loss function"), taken as the mean squared error over every element.

    L = L_Rec + L_Con + w_orth L_orth, with
    L_Rec = ||F_G(Q) - x||^2                                  Eq. (8)
    L_Con = ||F_G(Theta) - x||^2   ("image", Eq. 9 as printed)  or  ||Theta - Q||^2   ("embedding", Eq. 5 / 7)
    L_orth = ||S S^T - I||^2 / N^2 ("frobenius")  or  mean squared off-diagonal cosine of S ("cosine")

The printed orthogonality term, ``CE(S^T S - E)`` (Eq. 7) or ``d(S^T S - E)`` (Eq. 9), cannot hold as written: S is
(N, P) with N < P, so ``S^T S`` (P x P) has rank <= N and never equals the identity, and a cross-entropy of one
argument is not defined. We read it as the N x N Gram matrix ``S S^T = I`` (the N semantic embeddings orthonormal)
under the squared Frobenius norm; the paper's remark that it tried "a cosine similarity loss" is the ``cosine`` form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CONSISTENCY_FORMS = ("image", "embedding")
ORTHOGONALITY_FORMS = ("frobenius", "cosine", "none")


def reconstruction_loss(reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Eq. (8), ``L_Rec = d(F_G(Q_n), x_n)``: F_G's image from the pixel-wise embeddings (B, 3, H, W) against the
    image (B, 3, H, W) -> mean squared error (scalar)."""
    return F.mse_loss(reconstruction, image)


def consistency_loss(form: str, *, theta: torch.Tensor | None = None, q: torch.Tensor | None = None,
                     theta_reconstruction: torch.Tensor | None = None,
                     image: torch.Tensor | None = None) -> torch.Tensor:
    """L_Con between SEAT's output and the pixels (scalar).

    ``"image"`` (Eq. 9): ``d(F_G(Theta_n), x_n)``; theta_reconstruction and image (B, 3, H, W).
    ``"embedding"`` (Eq. 5 and 7): ``d(Theta_n, Q_n)``; theta and q (B, n, P)."""
    if form == "image":
        return F.mse_loss(theta_reconstruction, image)
    if form == "embedding":
        return F.mse_loss(theta, q)
    raise ValueError(f"consistency form {form!r} is not one of {CONSISTENCY_FORMS}")


def orthogonality_loss(s: torch.Tensor, form: str = "frobenius") -> torch.Tensor:
    """Uniformity of the semantic embeddings, the last term of Eq. (7) / (9) (see the module docstring).

    s: (N, P) or (B, N, P). ``"frobenius"``: ``mean_ij (S S^T - I)_ij^2`` (zero iff the rows are orthonormal);
    ``"cosine"``: ``mean_{i != j} cos(s_i, s_j)^2`` (zero iff the rows are orthogonal, whatever their norms);
    ``"none"``: 0. With a batch dimension the loss is the mean over the batch."""
    if form == "none":
        return s.new_zeros(())
    s = s.unsqueeze(0) if s.ndim == 2 else s
    n = s.shape[-2]
    eye = torch.eye(n, dtype=s.dtype, device=s.device)
    if form == "frobenius":
        return ((s @ s.transpose(-1, -2) - eye) ** 2).mean()
    if form == "cosine":
        u = F.normalize(s, dim=-1)
        off = (u @ u.transpose(-1, -2)) * (1 - eye)
        return (off ** 2).sum((-1, -2)).mean() / max(n * (n - 1), 1)
    raise ValueError(f"orthogonality form {form!r} is not one of {ORTHOGONALITY_FORMS}")


__all__ = ["CONSISTENCY_FORMS", "ORTHOGONALITY_FORMS", "reconstruction_loss", "consistency_loss",
           "orthogonality_loss"]

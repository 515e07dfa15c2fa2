"""nflows' blocks with fewer kernels: the same maths, parameters and state dict as nflows' own.

On a GPU the flow's cost is the number of its small kernels, not their arithmetic. nflows'
blocks index with NumPy arrays copied to the device on every call, gather and scatter the
halves of a coupling with index tensors, read a tensor flag on every pass (a wait of the host
for the device), add log-determinants in place one block at a time, and compute the inverse's
log-determinant where only its outputs are used. The blocks here compute the same outputs and
log-determinants with fewer kernels and no waits, keep nflows' parameter names and layout (a
state dict loads into either), and draw the same random numbers when built, so a flow made of
them trains exactly as one made of nflows' blocks. `python -m bench.loss_ops` counts the kernels
of both.

- `PriorConditionedFlow`: nflows' `Flow`, its context given to the base distribution only.
- `Blocks`: nflows' `CompositeTransform`, summing the log-determinants in one kernel.
- `SyncFreeActNorm`, `SyncFreeLULinear`, `AlternatingAffineCoupling`: nflows' `ActNorm`,
  `LULinear` and `AffineCouplingTransform` on an alternating mask.
- `inverse_outputs`: a transform's inverse without its log-determinant.

They subclass nflows' classes and rely on members that nflows does not document, which any
release may rename or change (`pyproject.toml` pins nflows):

- `Flow._transform`, `Flow._distribution`: the transform and the base distribution (and the
  prefixes of their keys in the state dict);
- `CompositeTransform._transforms`: the blocks; `CompositeTransform._cascade`: the loop over
  them, replaced here;
- `ActNorm._initialize` and its `initialized` buffer: the data-dependent initialisation, and
  whether it has run; `ActNorm.log_scale`, `ActNorm.shift`, read directly;
- `LULinear._initialize`: the draw of the initial parameters in the constructor (the random
  numbers a build consumes);
- `LULinear._create_lower_upper`: L and U, replaced here (nflows' `weight` and
  `weight_inverse` build on it); `Linear.forward_no_cache`, `Linear.inverse_no_cache`: the
  passes `LULinear` runs with its cache off, replaced here; `LULinear.lower_entries`,
  `upper_entries` (in `np.tril_indices` and `np.triu_indices` order), `upper_diag`, `bias`,
  `logabsdet`, read directly;
- `AffineCouplingTransform._scale_and_shift`: its formula (shift, then the scale's
  unconstrained half of the conditioner's outputs; scale = sigmoid(s + 2) + 1e-3) is written
  out again here, not called; `CouplingTransform.transform_net`, the conditioner, and its
  `identity_features` and `transform_features` buffers, kept in the state dict.

`gapan.flow`'s `ClassPrior` and `ClassConditionalFlow` implement `Distribution._log_prob` and
`Distribution._sample`, the hooks that nflows' `Distribution` has its subclasses implement.

When nflows changes, run `python -m pytest tests/test_flow_blocks.py tests/test_flow.py`: every
block here against nflows' own class with the same parameters (outputs, log-determinants and
gradients both ways, the initial parameters drawn from one seed, ActNorm's initialisation), and
the flow against nflows' own composition of the same blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nflows.distributions.base import Distribution
from nflows.flows.base import Flow
from nflows.transforms import (
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    LULinear,
    Transform,
)
from nflows.utils import create_alternating_binary_mask


def inverse_outputs(transform: Transform, inputs: torch.Tensor) -> torch.Tensor:
    """`transform.inverse(inputs)` without the log-determinant, which anchors never use.

    Every nflows block computes its inverse's log-determinant too, operations that an anchor
    pass pays for in every block and never reads. The blocks here skip it; any other block runs
    its full inverse.
    """
    if hasattr(transform, "inverse_outputs"):
        return transform.inverse_outputs(inputs)
    return transform.inverse(inputs)[0]


class PriorConditionedFlow(Flow):
    """nflows' `Flow` whose context conditions the base distribution only, not the transform.

    nflows' `Flow` hands the context to the transform's conditioners as well; here one transform
    is shared by every context. The transform and the base distribution, private in nflows, are
    properties.
    """

    @property
    def transform(self) -> Transform:
        """The invertible map from inputs to latents."""
        return self._transform

    @property
    def distribution(self) -> Distribution:
        """The base distribution of the latents."""
        return self._distribution

    def _log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        latents, logabsdet = self._transform(inputs)
        return self.distribution.log_prob(latents, context=context) + logabsdet


class Blocks(CompositeTransform):
    """nflows' CompositeTransform, summing the blocks' log-determinants in one kernel (nflows
    adds them in place one block at a time)."""

    @staticmethod
    def _cascade(inputs, funcs, context):
        outputs, logabsdets = inputs, []
        for func in funcs:
            outputs, logabsdet = func(outputs, context)
            logabsdets.append(logabsdet)
        return outputs, torch.stack(logabsdets).sum(dim=0)

    @property
    def blocks(self) -> list[Transform]:
        """The blocks, first to last (nflows keeps them private)."""
        return list(self._transforms)

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        for block in reversed(self._transforms):
            inputs = inverse_outputs(block, inputs)
        return inputs


class SyncFreeActNorm(ActNorm):
    """nflows' ActNorm without a GPU-to-CPU wait per call.

    nflows reads its tensor `initialized` flag on every training forward pass, which makes the
    CPU wait for the GPU once per block. Here the flag is mirrored in a Python bool, read from
    the tensor once (after a checkpoint load it is already set) and then never again.
    """

    def __init__(self, features: int):
        super().__init__(features)
        self._initialized_seen = False

    def forward(self, inputs: torch.Tensor, context=None):
        if self.training and not self._initialized_seen:
            if not self.initialized:
                self._initialize(inputs)
            self._initialized_seen = True
        outputs = torch.addcmul(self.shift.view(1, -1), inputs, self.scale.view(1, -1))
        logabsdet = self.log_scale.sum().expand(inputs.shape[0])
        return outputs, logabsdet

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs - self.shift.view(1, -1)) * torch.exp(-self.log_scale).view(1, -1)


class SyncFreeLULinear(LULinear):
    """nflows' LULinear with L and U made by one scatter on the parameters' device, and its
    inverse solved without transposes.

    nflows indexes the weight matrices with NumPy index arrays, which torch copies to the GPU on
    every call: two arrays of D(D-1)/2 positions per triangle, in every forward and inverse
    pass, with the host waiting for each copy, then writes each triangle and diagonal in its own
    kernel. Here all entries of L and U (with L's unit diagonal) are scattered at once from
    positions kept as a buffer (not saved: the state dict stays nflows'), and the softplus of
    U's diagonal is shared with the log-determinant.

    The inverse (every anchor goes through it) solves with `torch.linalg.solve_triangular` on
    the row-major inputs as they come, where nflows solves their transpose with the deprecated
    `torch.triangular_solve` and transposes the solution back: the same solution, computed in
    the inputs' own layout.
    """

    def __init__(self, features: int, identity_init: bool = True, eps: float = 1e-3):
        super().__init__(features, using_cache=False, identity_init=identity_init, eps=eps)
        # Positions in the flattened pair (L, U) of the entries `_lower_upper_diagonal` joins.
        square = features * features
        lower_rows, lower_cols = torch.tril_indices(features, features, offset=-1)  # nflows' order
        upper_rows, upper_cols = torch.triu_indices(features, features, offset=1)
        diagonal = torch.arange(features) * (features + 1)
        positions = [
            lower_rows * features + lower_cols,
            diagonal,
            square + upper_rows * features + upper_cols,
            square + diagonal,
        ]
        self.register_buffer("positions", torch.cat(positions), persistent=False)
        self.register_buffer("ones", torch.ones(features), persistent=False)

    def _lower_upper_diagonal(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L, U and U's diagonal."""
        diagonal = self.upper_diag
        entries = torch.cat([self.lower_entries, self.ones, self.upper_entries, diagonal])
        pair = entries.new_zeros(2 * self.features * self.features)
        pair.scatter_(0, self.positions, entries)  # in place: no copy of 2 D^2 zeros
        lower, upper = pair.view(2, self.features, self.features)
        return lower, upper, diagonal

    def _create_lower_upper(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, _ = self._lower_upper_diagonal()
        return lower, upper

    def forward_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, diagonal = self._lower_upper_diagonal()
        outputs = F.linear(F.linear(inputs, upper), lower, self.bias)
        return outputs, torch.log(diagonal).sum().expand(inputs.shape[0])

    def inverse_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inverse_outputs(inputs), -self.logabsdet().expand(inputs.shape[0])

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        # The forward pass is y = x U^T L^T + b on rows, so x = (y - b) L^-T U^-T.
        lower, upper = self._create_lower_upper()
        outputs = torch.linalg.solve_triangular(
            lower.T, inputs - self.bias, upper=True, left=False, unitriangular=True
        )
        return torch.linalg.solve_triangular(upper.T, outputs, upper=False, left=False)


class AlternatingAffineCoupling(AffineCouplingTransform):
    """nflows' affine coupling on its alternating mask, with the halves taken as views.

    nflows gathers the two halves with index tensors and scatters them back into a new tensor:
    four indexing kernels a pass, and more in the backward pass. With an alternating mask each
    half is every other feature: a view of the inputs, interleaved back by one stack. The
    parameters, buffers and results are nflows' own.
    """

    def __init__(self, features: int, even: bool, conditioner):
        super().__init__(create_alternating_binary_mask(features, even=even), conditioner)
        self.even = even  # as in nflows: transform features 0, 2, 4, ..., keep the others
        self._transformed = slice(0 if even else 1, None, 2)
        self._kept = slice(1 if even else 0, None, 2)

    def _split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, transformed) halves of the features."""
        if self.features % 2:
            return inputs[:, self._kept], inputs[:, self._transformed]
        # Pairs of neighbours: their backward pass is one stack, not two scatters and a sum.
        first, second = inputs.unflatten(1, (-1, 2)).unbind(2)
        return (second, first) if self.even else (first, second)

    def _merge(self, kept: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        if self.features % 2:
            outputs = kept.new_empty(kept.shape[0], self.features)
            outputs[:, self._kept] = kept
            outputs[:, self._transformed] = transformed
            return outputs
        pair = (transformed, kept) if self.even else (kept, transformed)
        return torch.stack(pair, dim=2).flatten(1)

    def _scale_and_shift_of(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nflows' `_scale_and_shift`, with the conditioner's outputs split as one view (their
        # backward pass is one stack, not two scatters and a sum).
        shift, unconstrained_scale = self.transform_net(kept).unflatten(1, (2, -1)).unbind(1)
        return torch.sigmoid(unconstrained_scale + 2) + 1e-3, shift

    def forward(self, inputs: torch.Tensor, context=None):
        kept, transformed = self._split(inputs)
        scale, shift = self._scale_and_shift_of(kept)
        logabsdet = torch.log(scale).sum(dim=1)
        return self._merge(kept, transformed * scale + shift), logabsdet

    def inverse(self, inputs: torch.Tensor, context=None):
        outputs, scale = self._inverse_and_scale(inputs)
        return outputs, -torch.log(scale).sum(dim=1)

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._inverse_and_scale(inputs)[0]

    def _inverse_and_scale(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, transformed = self._split(inputs)
        scale, shift = self._scale_and_shift_of(kept)
        return self._merge(kept, (transformed - shift) / scale), scale

"""Each block of gapan.flow_blocks against nflows' own class, with the same parameters.

These tests are the check to run when nflows changes: the blocks rely on its undocumented
members (listed in gapan/flow_blocks.py), and a difference from nflows' own results shows here.
"""

import pytest
import torch
from nflows.flows.base import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms import ActNorm, AffineCouplingTransform, CompositeTransform, LULinear
from nflows.utils import create_alternating_binary_mask

from gapan.flow import ClassPrior
from gapan.flow_blocks import (
    AlternatingAffineCoupling,
    Blocks,
    PriorConditionedFlow,
    SyncFreeActNorm,
    SyncFreeLULinear,
    inverse_outputs,
)


def conditioner(in_features: int, out_features: int) -> torch.nn.Module:
    net = ResidualNet(in_features, out_features, hidden_features=5, num_blocks=1)
    torch.nn.init.normal_(net.final_layer.weight)  # nflows starts it at zero: the identity
    return net


def initialised(block: ActNorm) -> ActNorm:
    """`block` after its data-dependent initialisation, as the first training pass makes it."""
    block(torch.randn(50, block.log_scale.numel(), dtype=torch.float64))
    return block


def coupling(cls, features: int, even: bool):
    if cls is AlternatingAffineCoupling:
        return AlternatingAffineCoupling(features, even, conditioner)
    return AffineCouplingTransform(create_alternating_binary_mask(features, even), conditioner)


def blocks(composite, actnorm, lu, affine):
    """A glow-like stack: an initialised and a fresh ActNorm, LU mixing, both coupling parities."""
    return composite(
        [
            initialised(actnorm(6).double()),
            lu(6, identity_init=False).double(),
            coupling(affine, 6, even=True).double(),
            actnorm(6).double(),
            coupling(affine, 6, even=False).double(),
        ]
    )


# Each block, as (features, builder, our class, nflows' class): the builder makes one block of
# the class it is given, so both sides are built alike.
PAIRS = {
    "actnorm": (7, lambda cls: initialised(cls(7).double()), SyncFreeActNorm, ActNorm),
    "lu": (7, lambda cls: cls(7, identity_init=False).double(), SyncFreeLULinear, LULinear),
    **{
        f"coupling-{features}-{'even' if even else 'odd'}": (
            features,
            lambda cls, features=features, even=even: coupling(cls, features, even).double(),
            AlternatingAffineCoupling,
            AffineCouplingTransform,
        )
        for features in (6, 7)
        for even in (True, False)
    },
    "blocks": (
        6,
        lambda classes: blocks(*classes),
        (Blocks, SyncFreeActNorm, SyncFreeLULinear, AlternatingAffineCoupling),
        (CompositeTransform, ActNorm, LULinear, AffineCouplingTransform),
    ),
}


def build(name: str, ours: bool):
    """Our block or nflows' of `PAIRS[name]`."""
    _, builder, our_class, their_class = PAIRS[name]
    return builder(our_class if ours else their_class)


@pytest.mark.parametrize("name", PAIRS)
def test_each_block_computes_what_nflows_class_computes(name):
    """Outputs, log-determinants and parameter gradients of both passes, and the inverse's
    outputs alone, with nflows' block loaded from our state dict."""
    torch.manual_seed(0)
    ours, theirs = build(name, ours=True), build(name, ours=False)
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # checkpoints stay nflows'
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, PAIRS[name][0], dtype=torch.float64)
    for direction in ("__call__", "inverse"):  # anchors may carry gradients (align.anchor_gradient)
        ours.zero_grad()
        theirs.zero_grad()
        ours_out = getattr(ours, direction)(x)
        theirs_out = getattr(theirs, direction)(x)
        for mine, reference in zip(ours_out, theirs_out, strict=True):
            torch.testing.assert_close(mine, reference)
        (ours_out[0].pow(2).sum() + ours_out[1].sum()).backward()
        (theirs_out[0].pow(2).sum() + theirs_out[1].sum()).backward()
        reference_grads = {key: p.grad for key, p in theirs.named_parameters()}
        for key, parameter in ours.named_parameters():
            torch.testing.assert_close(parameter.grad, reference_grads[key], msg=key)
    # Anchors skip the inverse's log-determinant, and nothing else.
    torch.testing.assert_close(inverse_outputs(ours, x), theirs.inverse(x)[0])


@pytest.mark.parametrize("name", PAIRS)
def test_each_block_starts_from_nflows_initial_parameters(name):
    """Built from one seed, our block holds nflows' parameters and leaves the generator where
    nflows' leaves it: a flow of our blocks starts where nflows' would, and so does everything
    built after it. ActNorm's data-dependent initialisation is nflows' too."""
    states, next_draws = [], []
    for ours in (True, False):
        torch.manual_seed(0)
        states.append(build(name, ours).state_dict())
        next_draws.append(torch.randn(3))
    ours, theirs = states
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(*next_draws)


def test_actnorm_loaded_initialised_is_not_initialised_again():
    """A checkpoint's ActNorm keeps its parameters in training, as nflows' does."""
    torch.manual_seed(0)
    source = initialised(ActNorm(4).double())
    ours, theirs = SyncFreeActNorm(4).double(), ActNorm(4).double()
    ours.load_state_dict(source.state_dict())
    theirs.load_state_dict(source.state_dict())
    x = 3 + torch.randn(20, 4, dtype=torch.float64)  # data that would move a fresh ActNorm
    for mine, reference in zip(ours.train()(x), theirs.train()(x), strict=True):
        torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(ours.shift, source.shift)


def test_the_prior_conditioned_flow_is_nflows_flow_with_an_unconditional_transform():
    """nflows' `Flow` hands the context to the transform too; our blocks ignore it, so both
    flows give the same likelihood, and the same state dict."""
    torch.manual_seed(0)
    transform = blocks(Blocks, SyncFreeActNorm, SyncFreeLULinear, AlternatingAffineCoupling)
    prior = ClassPrior(3, 6, variance=0.7, learn_variance=True).double()
    ours, theirs = PriorConditionedFlow(transform, prior), Flow(transform, prior)
    assert ours.transform is transform and ours.distribution is prior
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(8, 6, dtype=torch.float64)
    labels = torch.arange(8) % 3
    torch.testing.assert_close(ours.log_prob(x, context=labels), theirs.log_prob(x, labels))

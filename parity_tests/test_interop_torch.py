"""The fused-conv PyTorch layout, checked against a test-only module of that layout (written here, ~20 lines).

The peer is one ``Conv2d`` per layer over ``cat([x, h], channel)``, gate blocks i, f, o, g, padding
``kernel_size // 2``, state-dict keys ``cell_list.{i}.conv.weight`` / ``.bias``: the layout of the most used
PyTorch ConvLSTM. Both directions are tested: the peer's random weights imported and run by all three of our
frameworks, and our weights exported and loaded into the peer with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from convlstm_bench import cli
from implementations import interop
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import tolerance
from implementations.weights import load, random_weights, save

from .conftest import FRAMEWORKS, assert_all_close
from .test_interop_common import assert_bit_exact, check_ours_against_peer, peer_tensors, sample_input

torch = pytest.importorskip("torch", reason="torch is not installed: the fused-layout peer is unavailable")
nn = torch.nn

DTYPES = ["float32", "float64"]


class FusedCell(nn.Module):
    def __init__(self, c_in: int, filters: int, kernel: tuple[int, int], bias: bool) -> None:
        super().__init__()
        self.filters = filters
        self.conv = nn.Conv2d(c_in + filters, 4 * filters, kernel, padding=(kernel[0] // 2, kernel[1] // 2), bias=bias)

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.filters, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class FusedStack(nn.Module):
    """The peer. Input (B, T, C, H, W); returns the last layer's h sequence and (h, c) per layer."""

    def __init__(self, c_in: int, filters: list[int], kernels: list[tuple[int, int]], bias: bool = True) -> None:
        super().__init__()
        chans = [c_in, *filters[:-1]]
        self.cell_list = nn.ModuleList(FusedCell(c, f, k, bias) for c, f, k in zip(chans, filters, kernels))

    def forward(self, x):
        states = []
        for cell in self.cell_list:
            b, t, _, hh, ww = x.shape
            h = c = x.new_zeros(b, cell.filters, hh, ww)
            outs = []
            for step in range(t):
                h, c = cell(x[:, step], h, c)
                outs.append(h)
            x = torch.stack(outs, dim=1)
            states.append((h, c))
        return x, states


@dataclasses.dataclass(frozen=True)
class FusedCase:
    id: str
    filters: tuple[int, ...]
    kernels: tuple[tuple[int, int], ...]
    input_shape: tuple[int, ...]  # channels-last (B, T, H, W, C), as our runners take it
    bias: bool = True


CASES = [
    FusedCase("k3", (4,), ((3, 3),), (2, 3, 6, 5, 2)),
    FusedCase("two-layers-k5-k1", (3, 4), ((5, 5), (1, 1)), (1, 4, 7, 6, 3)),
    FusedCase("rect-kernel-no-bias", (3, 2), ((3, 5), (3, 1)), (2, 2, 5, 8, 1), bias=False),
]
CASE_IDS = [c.id for c in CASES]


def build_peer(case: FusedCase, dtype: str, seed: int = 0) -> FusedStack:
    torch.manual_seed(seed)
    peer = FusedStack(case.input_shape[-1], list(case.filters), list(case.kernels), case.bias)
    with torch.no_grad():  # biases away from zero so the gate reordering of the bias is exercised
        for p in peer.parameters():
            p.uniform_(-0.5, 0.5)
    return peer.to(getattr(torch, dtype)).eval()


def run_peer(peer: FusedStack, x: np.ndarray) -> dict[str, np.ndarray]:
    """The peer on channels-last NumPy input, results channels-last under ForwardResult's names."""
    with torch.no_grad():
        seq, states = peer(torch.from_numpy(x).permute(0, 1, 4, 2, 3))

    def last(t):
        return t.movedim(-3, -1).numpy()

    return peer_tensors(last(seq), [(last(h), last(c)) for h, c in states])


def case_spec(case: FusedCase) -> StackSpec:
    layers = tuple(LayerSpec(f, k, use_bias=case.bias) for f, k in zip(case.filters, case.kernels))
    return StackSpec(case.input_shape[-1], layers)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fused_state_dict_runs_the_same_in_ours(framework, case, dtype):
    peer = build_peer(case, dtype)
    x = sample_input(case.input_shape, dtype)
    weights = interop.from_torch_fused(peer.state_dict())
    assert weights.spec == case_spec(case)
    assert weights.dtype == dtype
    check_ours_against_peer(framework, f"{case.id}-{dtype}", weights, x, run_peer(peer, x), dtype, "torch-fused")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_ours_exported_to_the_fused_layout_loads_strictly_and_runs_the_same(case, dtype):
    from implementations import reference

    weights = random_weights(case_spec(case), seed=7, dtype=dtype)
    state = interop.to_torch_fused(weights)
    peer = build_peer(case, dtype, seed=1)
    peer.load_state_dict(state, strict=True)  # every key and shape must fit the real module
    assert_bit_exact(interop.from_torch_fused(peer.state_dict()), weights, "ours -> fused -> ours")
    x = sample_input(case.input_shape, dtype)
    assert_all_close("ours exported to the fused layout", "torch", case.id, run_peer(peer, x),
                     reference.forward(weights, x).tensors(), tolerance("forward", dtype),
                     other="reference", kind="interop", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pt_round_trip_through_the_cli_is_bit_exact(dtype, tmp_path):
    case = CASES[1]
    peer = build_peer(case, dtype)
    torch.save({f"encoder.{k}": v for k, v in peer.state_dict().items()}, tmp_path / "peer.pt")  # a common prefix
    assert cli.main(["convert", str(tmp_path / "peer.pt"), "-o", str(tmp_path / "a.npz")]) == 0
    a = load(tmp_path / "a.npz")
    assert_bit_exact(a, interop.from_torch_fused(peer.state_dict()), ".pt (prefixed) -> npz")
    assert cli.main(["convert", str(tmp_path / "a.npz"), "-o", str(tmp_path / "b.pth")]) == 0
    back = torch.load(tmp_path / "b.pth", weights_only=True)
    assert sorted(back) == sorted(peer.state_dict())
    for key, value in peer.state_dict().items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


REFUSED_EXPORTS = {
    "even kernel": (LayerSpec(3, (2, 2)), r"even kernel|odd"),
    "strides": (LayerSpec(3, (3, 3), strides=(2, 2)), r"stride"),
    "peephole": (LayerSpec(3, (3, 3), peephole="channel"), r"peephole"),
    "valid": (LayerSpec(3, (3, 3), padding="valid"), r"valid"),
    "dilation": (LayerSpec(3, (3, 3), dilation_rate=(2, 2)), r"dilation"),
    "relu": (LayerSpec(3, (3, 3), activation="relu"), r"tanh"),
    "hard sigmoid": (LayerSpec(3, (3, 3), recurrent_activation="hard_sigmoid"), r"sigmoid"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_EXPORTS))
def test_fused_export_refuses_what_the_layout_cannot_express(name, tmp_path):
    layer, pattern = REFUSED_EXPORTS[name]
    weights = random_weights(StackSpec(2, (layer,)), seed=0)
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.to_torch_fused(weights)
    save(tmp_path / "w.npz", weights)
    assert cli.main(["convert", str(tmp_path / "w.npz"), "-o", str(tmp_path / "w.pt")]) == 2
    assert not (tmp_path / "w.pt").exists(), "a refused conversion must not leave a file behind"


def good_state() -> dict:
    return build_peer(CASES[0], "float32").state_dict()


REFUSED_IMPORTS = {
    "extra key": (lambda s: {**s, "head.weight": torch.zeros(2)}, r"unexpected keys \['head.weight'\]"),
    "missing weight": (lambda s: {k: v for k, v in s.items() if k.endswith("bias")}, r"missing weight"),
    "layer gap": (lambda s: {k.replace(".0.", ".1."): v for k, v in s.items()}, r"layer indices \[1\]"),
    "even kernel": (lambda s: {**s, "cell_list.0.conv.weight": torch.zeros(16, 6, 2, 2)}, r"even kernel"),
    "not 4F": (lambda s: {**s, "cell_list.0.conv.weight": torch.zeros(15, 6, 3, 3)}, r"4F"),
    "bias shape": (lambda s: {**s, "cell_list.0.conv.bias": torch.zeros(12)}, r"bias"),
    "integer": (lambda s: {**s, "cell_list.0.conv.weight": torch.zeros(16, 6, 3, 3, dtype=torch.int32)}, r"int32"),
    "nan": (lambda s: {**s, "cell_list.0.conv.bias": torch.full((16,), float("nan"))}, r"NaN|non-finite|finite"),
    "empty": (lambda s: {}, r"empty"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_IMPORTS))
def test_fused_import_refusals_say_what_was_expected(name):
    edit, pattern = REFUSED_IMPORTS[name]
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.from_torch_fused(edit(good_state()))


class _Payload:
    """Unpickling this would create the marker file: proof that a .pt is never fully unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_in_a_pt_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"cell_list.0.conv.weight": _Payload(str(marker))}, tmp_path / "evil.pt", pickle_protocol=2)
    assert pickle.HIGHEST_PROTOCOL >= 2
    with pytest.raises(interop.ConversionError, match=r"weights_only=True"):
        interop.read_torch_fused_file(tmp_path / "evil.pt")
    assert not marker.exists(), "the .pt payload was executed"

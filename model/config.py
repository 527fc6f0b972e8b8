"""Hyper-parameters of a DPA3 model, each written once (defaults = deepmd-kit's water example).

Names follow deepmd-kit's ``repflow`` and ``fitting_net`` keys, so a deepmd-kit input (or the
config embedded in its checkpoint) maps onto these classes key by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dpa3_al.model.activation_math import check_activation
from dpa3_al.common.typed_config import ConfigError, field, from_dict, to_dict

Precision = Literal["float32", "float64"]


@dataclass(frozen=True)
class RepFlowConfig:
    """The RepFlow descriptor (node, edge and angle streams). Lengths in Å."""

    n_dim: int = field(128, doc="node feature width", ge=1)
    e_dim: int = field(64, doc="edge feature width", ge=1)
    a_dim: int = field(32, doc="angle feature width", ge=1)
    nlayers: int = field(6, doc="number of RepFlow layers", ge=1)
    e_rcut: float = field(6.0, doc="edge cutoff", unit="Å", gt=0)
    e_rcut_smth: float = field(5.3, doc="edge switch start (exp switch: its 1/e point)", unit="Å", gt=0)
    e_sel: int = field(120, doc="max edge neighbours kept (nearest first); also sets the normaliser", ge=1)
    a_rcut: float = field(4.0, doc="angle cutoff", unit="Å", gt=0)
    a_rcut_smth: float = field(3.5, doc="angle switch start", unit="Å", gt=0)
    a_sel: int = field(30, doc="max angle neighbours (first a_sel edge slots within a_rcut)", ge=1)
    axis_neuron: int = field(4, doc="columns of the symmetrisation product G", ge=1)
    update_angle: bool = field(True, doc="run the angle stream")
    update_style: Literal["res_residual", "res_avg", "res_incr"] = field("res_residual", doc="residual rule")
    update_residual: float = field(0.1, doc="initial scale of res_residual vectors")
    update_residual_init: Literal["const", "norm"] = field("const", doc="res_residual vector init")
    smooth_edge_update: bool = field(True, doc="zero (not self) padding of the angle->edge message; smooth at a_rcut")
    a_compress_rate: int = field(1, doc="angle-message compression rate c (0 = off)", ge=0)
    a_compress_e_rate: int = field(2, doc="edge compression multiplier c_e", ge=1)
    a_compress_use_split: bool = field(True, doc="compress by slicing channels instead of a linear map")
    n_multi_edge_message: int = field(1, doc="edge->node message heads", ge=1)
    fix_stat_std: float = field(0.3, doc="constant env-mat std (0: computed from data)", ge=0)
    optim_update: bool = field(True, doc="accepted for compatibility; split-weight evaluation is always used")
    edge_init_use_dist: bool = field(True, doc="initial edge feature from the raw distance (no activation)")
    use_exp_switch: bool = field(True, doc="exp(-exp(20 (r - r_s)/r_s)) switch instead of the polynomial one")
    use_dynamic_sel: bool = field(False, doc="normalise sums by sel / sel_reduce_factor (for large sel)")
    sel_reduce_factor: float = field(10.0, doc="f in the dynamic-sel normalisers", gt=0)
    sequential_update: bool = field(False, doc="sequential (edge, angle, edge, node) update order")
    activation_function: str = field("silut:10.0", doc="descriptor activation")
    env_protection: float = field(0.0, doc="added to r in env-mat denominators", unit="Å", ge=0)
    concat_output_tebd: bool = field(False, doc="append the type embedding to the descriptor")
    use_tebd_bias: bool = field(False, doc="bias in the type embedding")

    def __post_init__(self) -> None:
        check = _checker(self)
        check(self.e_rcut >= self.a_rcut, "a_rcut", f"{self.a_rcut} must be <= e_rcut = {self.e_rcut}")
        check(self.e_sel >= self.a_sel, "a_sel", f"{self.a_sel} must be <= e_sel = {self.e_sel}")
        check(self.e_rcut_smth < self.e_rcut, "e_rcut_smth", f"{self.e_rcut_smth} must be < e_rcut = {self.e_rcut}")
        check(self.a_rcut_smth < self.a_rcut, "a_rcut_smth", f"{self.a_rcut_smth} must be < a_rcut = {self.a_rcut}")
        check(not (self.use_dynamic_sel and not self.smooth_edge_update), "smooth_edge_update",
              "use_dynamic_sel requires smooth_edge_update: true")
        check(not (self.sequential_update and (self.update_style != "res_residual" or not self.update_angle)),
              "sequential_update", "requires update_style res_residual and update_angle true")
        check(self.axis_neuron <= min(self.e_dim, self.n_dim), "axis_neuron",
              f"{self.axis_neuron} must be <= min(e_dim, n_dim)")
        if self.a_compress_rate:
            c, ce = self.a_compress_rate, self.a_compress_e_rate
            check(self.a_dim % c == 0 and (self.a_dim * ce) % (2 * c) == 0, "a_compress_rate",
                  f"a_dim={self.a_dim} must be divisible by c={c} and a_dim*c_e by 2c")
            check(self.a_dim // c <= self.n_dim and self.a_dim * ce // (2 * c) <= self.e_dim, "a_compress_rate",
                  "compressed widths exceed n_dim/e_dim")
        try:
            check_activation(self.activation_function)
        except ValueError as err:
            raise ConfigError("activation_function", str(err)) from None

    @property
    def n_angle_node(self) -> int:
        """Width of the node slice/projection used in angle messages (n')."""
        return self.a_dim // self.a_compress_rate if self.a_compress_rate else self.n_dim

    @property
    def n_angle_edge(self) -> int:
        """Width of the edge slice/projection used in angle messages (e')."""
        if self.a_compress_rate:
            return self.a_dim * self.a_compress_e_rate // (2 * self.a_compress_rate)
        return self.e_dim

    @property
    def edge_norm(self) -> float:
        """S_e: divides edge->node sums (its square root divides the symmetrisation sums)."""
        return self.e_sel / self.sel_reduce_factor if self.use_dynamic_sel else float(self.e_sel)

    @property
    def angle_norm(self) -> float:
        """S_a: its square root divides angle->edge sums."""
        return self.a_sel / self.sel_reduce_factor if self.use_dynamic_sel else float(self.a_sel)


@dataclass(frozen=True)
class FittingConfig:
    """The shared energy fitting net (one MLP for all elements)."""

    neuron: list[int] = field(default_factory=lambda: [240, 240, 240], doc="hidden layer widths")
    resnet_dt: bool = field(True, doc="trainable timestep vector on residual hidden layers")
    activation_function: str = field("silut:10.0", doc="fitting activation")
    dim_case_embd: int = field(0, doc="width of the dataset (case) encoding appended to the descriptor", ge=0)

    def __post_init__(self) -> None:
        _checker(self)(all(n >= 1 for n in self.neuron), "neuron", f"{self.neuron}: widths must be >= 1")
        try:
            check_activation(self.activation_function)
        except ValueError as err:
            raise ConfigError("activation_function", str(err)) from None


@dataclass(frozen=True)
class ModelConfig:
    """A complete DPA3 energy model: type map, descriptor, fitting, precision."""

    type_map: list[str] = field(doc="element symbols in model type order")
    descriptor: RepFlowConfig = field(default_factory=RepFlowConfig, doc="RepFlow descriptor")
    fitting: FittingConfig = field(default_factory=FittingConfig, doc="energy fitting net")
    precision: Precision = field("float32", doc="float32 (fast, the usual) or float64")

    def __post_init__(self) -> None:
        from ase.data import atomic_numbers

        check = _checker(self)
        check(len(self.type_map) > 0, "type_map", "must list at least one element")
        check(len(set(self.type_map)) == len(self.type_map), "type_map", f"{self.type_map} has duplicates")
        bad = [t for t in self.type_map if t not in atomic_numbers]
        check(not bad, "type_map", f"{bad} are not element symbols")

    @staticmethod
    def tiny(type_map: list[str], **descriptor: object) -> "ModelConfig":
        """A very small model for tests and examples (about 5 k parameters)."""
        rep = dict(n_dim=16, e_dim=8, a_dim=8, nlayers=2, e_sel=120, a_sel=30)
        rep.update(descriptor)
        return ModelConfig(type_map=list(type_map), descriptor=from_dict(RepFlowConfig, rep, path="descriptor"),
                           fitting=FittingConfig(neuron=[16, 16]), precision="float64")

    def to_dict(self) -> dict:
        return to_dict(self)

    @staticmethod
    def from_dict(data: dict, source: str | None = None) -> "ModelConfig":
        return from_dict(ModelConfig, data, source=source)


def _checker(obj: object):
    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(key, message)

    return check

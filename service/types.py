"""Core vocabulary: node and edge kinds, canonical MIB names, model shapes.

Every other module speaks in these types instead of loose strings. Names follow MIB:
nodes ``input``, ``a{L}.h{H}``, ``m{L}``, ``logits``; edges ``SRC->DST`` with ``<q>``,
``<k>`` or ``<v>`` on attention destinations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class NodeKind(StrEnum):
    """What a node of the computation graph is."""

    INPUT = "input"
    ATTENTION = "attention"
    MLP = "mlp"
    LOGITS = "logits"


class Port(StrEnum):
    """Which input of a destination an edge feeds."""

    Q = "q"
    K = "k"
    V = "v"
    MLP = "mlp"
    LOGITS = "logits"

    @property
    def is_attention(self) -> bool:
        return self in (Port.Q, Port.K, Port.V)


class Ablation(StrEnum):
    """What an ablated node or edge carries instead of its clean output."""

    ZERO = "zero"
    MEAN = "mean"
    RESAMPLE = "resample"


class Method(StrEnum):
    """Discovery methods the engine runs."""

    ABLATION = "ablation"
    EAP = "eap"
    EAP_IG = "eap-ig"
    PATH_PATCHING = "path-patching"
    IPE = "ipe"
    IPE_APPROX = "ipe-approx"
    ACDC = "acdc"
    EDGE_PRUNING = "edge-pruning"

    @property
    def searches_paths(self) -> bool:
        """Whether the method builds its circuit from path effects (path patching, IPE)."""
        return self in (Method.PATH_PATCHING, Method.IPE, Method.IPE_APPROX)


class Search(StrEnum):
    """How IPE explores paths backwards from the logits."""

    BFS = "bfs"
    """every partial path whose contribution passes the threshold, depth by depth (``width`` best per depth)"""
    BEST_FIRST = "best-first"
    """the partial path of largest contribution first, until the path or time budget is spent"""


class Metric(StrEnum):
    """The task metric a method optimises or reports."""

    LOGIT_DIFF = "logit_diff"
    PROB_DIFF = "prob_diff"
    KL = "kl"

    @property
    def harm_sign(self) -> float:
        """The sign of an attribution score whose edge (or component) the task needs: ablating it harms the
        metric. -1 for the differences (ablation lowers them), +1 for KL to the full model (ablation raises it)."""
        return 1.0 if self is Metric.KL else -1.0


class TaskFamily(StrEnum):
    """The kind of behaviour a task probes; the catalogue groups circuits by it."""

    SEQUENCE_CONTINUATION = "sequence-continuation"
    COMPARISON = "comparison"
    NAME_COPYING = "name-copying"
    CUSTOM = "custom"


class Level(StrEnum):
    """Granularity of an overlap question."""

    NODE = "node"
    EDGE = "edge"


class IgPoints(StrEnum):
    """Where EAP-IG takes its ``steps`` gradients between the clean input embedding (or, for ``activations``, each
    source's output) and the ablated one."""

    MIB = "mib"
    """as MIB's reference (EAP-IG-inputs): corrupted + k/steps (clean - corrupted), k = 0 .. steps - 1: the
    ablated end included, the clean end not"""
    CLEAN = "clean"
    """clean + k/steps (ablated - clean), k = 0 .. steps - 1: the clean end included, the ablated end not, so
    one step is EAP"""
    ACTIVATIONS = "activations"
    """MIB's EAP-IG-activations: on clean runs, one source's output at a time (the input, each layer's attention,
    each MLP) at corrupted + k/steps (clean - corrupted), k = 1 .. steps (the clean end included); the gradients
    averaged over every source and step"""


class Gradient(StrEnum):
    """Which gradients EAP and EAP-IG take."""

    PLAIN = "plain"
    GIM = "gim"
    """GIM's backward-pass modifications (frozen norms, softmax temperature, q/k/v and gated-MLP scales)"""


class Gate(StrEnum):
    """How a learned edge mask turns its parameter into a coefficient in [0, 1] (``--method edge-pruning``)."""

    HARD_CONCRETE = "hard-concrete"
    """Edge Pruning's stretched, clamped hard-concrete gates with an L0 target and Lagrange multipliers"""
    SIGMOID = "sigmoid"
    """UGS-style sigmoid masks with an L1 penalty"""


class NullModel(StrEnum):
    """What chance is, for an overlap: random circuits of the same sizes in the same model graph."""

    UNIFORM = "uniform"
    """every set of that many items equally likely (exact, hypergeometric)"""
    CONNECTED = "connected"
    """random edge sets whose every edge lies on an input -> logits path (sampled, ``service.null_sampler``)"""


class Mode(StrEnum):
    """How a circuit is evaluated on a task."""

    KEEP = "keep"
    """everything outside the circuit ablated: its faithfulness"""
    KNOCKOUT = "knockout"
    """the circuit ablated inside the full model: the share of the behaviour left"""


_HEAD = re.compile(r"a(\d+)\.h(\d+)")
_MLP = re.compile(r"m(\d+)")
_EDGE = re.compile(r"(?P<src>[^<>\s]+)->(?P<dst>[^<>\s]+?)(?:<(?P<port>[qkv])>)?")


class InvalidName(ValueError):
    """A node or edge name that is not a canonical MIB name."""


@dataclass(frozen=True, order=True)
class Node:
    """A node of the computation graph: the embeddings, a head, an MLP, or the logits."""

    kind: NodeKind
    layer: int | None = None
    head: int | None = None

    @property
    def name(self) -> str:
        if self.kind is NodeKind.ATTENTION:
            return f"a{self.layer}.h{self.head}"
        if self.kind is NodeKind.MLP:
            return f"m{self.layer}"
        return self.kind.value

    @staticmethod
    def parse(name: str) -> Node:
        """Parse a canonical node name; raise ``InvalidName`` when it is not one."""
        if name == "input":
            return Node(NodeKind.INPUT)
        if name == "logits":
            return Node(NodeKind.LOGITS)
        if m := _HEAD.fullmatch(name):
            return Node(NodeKind.ATTENTION, int(m[1]), int(m[2]))
        if m := _MLP.fullmatch(name):
            return Node(NodeKind.MLP, int(m[1]))
        raise InvalidName(f"not a node name: {name!r}")

    @property
    def is_component(self) -> bool:
        """Heads and MLPs; ``input`` and ``logits`` belong to every circuit."""
        return self.kind in (NodeKind.ATTENTION, NodeKind.MLP)


@dataclass(frozen=True)
class Edge:
    """A directed edge from a source node into one input port of a destination."""

    src: Node
    dst: Node
    port: Port

    @property
    def name(self) -> str:
        suffix = f"<{self.port.value}>" if self.port.is_attention else ""
        return f"{self.src.name}->{self.dst.name}{suffix}"

    @staticmethod
    def parse(name: str) -> Edge:
        """Parse ``SRC->DST[<q|k|v>]``; raise ``InvalidName`` when malformed."""
        m = _EDGE.fullmatch(name)
        if not m:
            raise InvalidName(f"not an edge name: {name!r}")
        src, dst = Node.parse(m["src"]), Node.parse(m["dst"])
        if dst.kind is NodeKind.ATTENTION:
            if not m["port"]:
                raise InvalidName(f"edge into a head needs <q>, <k> or <v>: {name!r}")
            return Edge(src, dst, Port(m["port"]))
        if m["port"]:
            raise InvalidName(f"only edges into heads take <q>/<k>/<v>: {name!r}")
        return Edge(src, dst, Port.LOGITS if dst.kind is NodeKind.LOGITS else Port.MLP)


@dataclass(frozen=True)
class ModelShape:
    """What the catalogue needs to know of a model to name its graph, without weights."""

    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool = False
    d_model: int | None = None

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"model shape needs n_layers >= 1 and n_heads >= 1, got {self}")

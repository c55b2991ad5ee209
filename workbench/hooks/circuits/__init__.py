"""Circuits: metrics, activation and path patching, ablations, direct logit attribution and the logit lens
(`patching`); the circuit graph, running circuits and faithfulness (`graph`); and discovery — EAP, EAP-IG,
ACDC, composition scores, each method's scores on a model or a snapshot (`discovery`). Everything works on our
models and on TL bridges."""

from workbench.hooks.circuits.discovery import (
    METHODS,
    MIN_GAP_SHARE,
    acdc,
    composition_scores,
    discover,
    discover_all,
    discovery_scores,
    edge_attribution,
    formed_gap,
    method_scores,
    path_patching,
)
from workbench.hooks.circuits.graph import (
    FRACTIONS,
    CircuitGraph,
    CircuitRun,
    area_scores,
    faithfulness_at,
    faithfulness_curve,
    ports,
    smallest_circuit,
)
from workbench.hooks.circuits.patching import (
    PROMPT_METRICS,
    SWEEPS,
    Metric,
    ablated,
    activation_patching,
    check_metric,
    check_pair,
    direct_logit_attribution,
    kl_to,
    logit_diff,
    logit_lens,
    next_token_loss,
    next_token_margin,
    normalised,
    reference_activations,
    target_probability,
)

__all__ = [
    "FRACTIONS", "METHODS", "MIN_GAP_SHARE", "PROMPT_METRICS", "SWEEPS", "CircuitGraph", "CircuitRun", "Metric",
    "ablated", "acdc", "activation_patching", "area_scores", "check_metric", "check_pair", "composition_scores",
    "direct_logit_attribution", "discover", "discover_all", "discovery_scores", "edge_attribution", "faithfulness_at",
    "faithfulness_curve", "formed_gap", "kl_to", "logit_diff", "logit_lens", "method_scores", "next_token_loss",
    "next_token_margin", "normalised", "path_patching", "ports", "reference_activations", "smallest_circuit",
    "target_probability",
]

"""An experiment point → each node's typed config (nodes/config.py) and the command that starts the node.

The runner writes every config to RUN/nodes/<name>.json and starts `python -m nodes.<kind> --config FILE`; the
same command reruns a node by hand. Everything a node is told comes from the experiment's own sub-models (the
schema is built from the node models), so nothing is copied or translated here: only what is specific to a run
(names, endpoints, paths, seeds) is filled in.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence, TypeVar

from pydantic import BaseModel

from nodes.config import ClientConfig, DraftModel, DrafterConfig, Routing, VerifierConfig, write_config
from testbed.run.clients import total_requests
from testbed.run.workload_files import prompts_file, trace_file

M = TypeVar("M", bound=BaseModel)


def _narrow(model: type[M], obj: BaseModel) -> M:
    """The node model's part of an experiment model that extends it (VerifierSpec → VerifierModel: without node
    and port; the experiment's Routing → the nodes' Routing: without verifiers)."""
    return model.model_validate(obj.model_dump(include=set(model.model_fields)))


def verifier_config(exp, name: str, bind: str, run_dir: Path, link_state: Path | None = None,
                    curve=None) -> VerifierConfig:
    """Verifier `name` of an experiment point, bound to `bind`, logging to RUN/events/<name>.jsonl; `link_state`
    is the file the runner keeps current (mininet only). The random budget scheduler's seed is the experiment's.
    Its model: verifier.* with verifier.overrides[host] applied (`name` is the host, or "verifier" alone).
    `curve`: the run's CURVE keys (testbed/run/curve.py RunCurve), or None: plain TCP."""
    host = exp.verifier.node if name == "verifier" else name
    config = VerifierConfig(
        name=name, bind=bind, model=exp.verifier.model_for(host), batching=exp.batching,
        speculation=exp.speculation, scheduling=exp.scheduling, seed=exp.seed,
        link_state=None if link_state is None else str(link_state),
        log=str(Path(run_dir) / "events" / f"{name}.jsonl"))
    return curve.verifier(config, host) if curve is not None else config


def drafter_config(exp, node: str, index: int, endpoints: Sequence[str], run_dir: Path,
                   clients_bind: str | None = None, curve=None) -> DrafterConfig:
    """The `index`-th drafter (host `node`) of an experiment point, connecting to the verifiers at `endpoints`:
    its merged settings (drafters.* and drafters.overrides[node]), its prompts (and trace share) copied into the
    run (testbed/run/workload_files.py), starting at
    prompt `index`, seed `seed * 1000 + index` (sampling, arrivals, the synthetic draft, routing), giving up
    after limits.ready_timeout_s without a verdict. With users' clients (workload.arrivals clients) it listens on
    `clients_bind` and serves all their requests. `curve`: the run's CURVE keys (RunCurve; the verifiers' in the
    order of `endpoints`, which is exp.verifier_nodes()'s), or None: plain TCP."""
    run_dir = Path(run_dir)
    config = DrafterConfig(
        name=node, connect=list(endpoints), model=DraftModel(**exp.drafter_settings(node)),
        workload=exp.workload.model_copy(update={
            "prompts": str(prompts_file(run_dir, exp, node)),
            **({"trace": str(trace_file(run_dir, node))} if exp.workload.arrivals == "trace" else {}),
            **({"requests": total_requests(exp), "duration_s": None} if exp.clients is not None else {})}),
        clients_bind=clients_bind,
        prompt_offset=index, speculation=exp.speculation, routing=_narrow(Routing, exp.routing),
        seed=exp.seed * 1000 + index, timeout_s=exp.limits.ready_timeout_s, probe_s=exp.limits.probe_s,
        log=str(run_dir / "events" / f"{node}.jsonl"), out=str(run_dir / "outputs" / f"{node}.jsonl"),
        start_gate=str(start_gate(run_dir, node)))
    return curve.drafter(config, exp.verifier_nodes()) if curve is not None else config


def start_gate(run_dir: Path, node: str) -> Path:
    """The FIFO a drafter waits on after connecting; the runner closes them all at once (runner._open_gates)."""
    return Path(run_dir) / "nodes" / f"{node}.go"


def config_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "nodes" / f"{name}.json"


def node_argv(config: VerifierConfig | DrafterConfig | ClientConfig, path: Path) -> list[str]:
    """The command that starts the node a config file describes."""
    kind = "verifier" if isinstance(config, VerifierConfig) else "client" if isinstance(config, ClientConfig) \
        else "drafter"
    return [sys.executable, "-m", f"nodes.{kind}", "--config", str(path)]


def write_node_config(config: VerifierConfig | DrafterConfig | ClientConfig, run_dir: Path) -> list[str]:
    """Write the config to RUN/nodes/<name>.json; the command that starts that node."""
    return node_argv(config, write_config(config, config_path(run_dir, config.name)))

"""CURVE keys of a run (experiment `security.curve`; nodes/security.py does the sockets' side).

    keys = for_run(exp, inventory, manifest)        # None: plain TCP; else this run's RunCurve
    verifier_config(exp, ..., curve=keys)            # the node configs with their curve blocks
    drafter_config(exp, ..., curve=keys)             # (RunCurve.verifier and .drafter do it)

Each node (a topology host running a verifier or a drafter) gets one keypair per run, drawn with
zmq.curve_keypair(), unless one is given from outside (an inventory's `curve_public_key`/`curve_secret_key`:
`given_keys(inventory)`, or any mapping host -> (public, secret) Z85). A verifier accepts the run's drafters' public
keys and nobody else's; a drafter knows each verifier's public key. Secret keys go into the node config files only
(written 0600, nodes/config.py write_config); the manifest records that CURVE was on and each node's public key.

Off by default inside the emulated network (nothing there crosses a real wire, and a CURVE handshake and the
encryption cost a little per round: `make bench`, testbed/bench/curve.py); on when a run has real hosts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import zmq

from nodes.config import DrafterConfig, VerifierConfig
from nodes.security import DrafterCurve, VerifierCurve, key_problem, public_of


class CurveError(ValueError):
    """A given key that is not one; str() is one line naming the node and the field."""


@dataclass(frozen=True)
class Keypair:
    public: str
    secret: str

    def __repr__(self) -> str:          # never print a secret key by accident
        return f"Keypair(public={self.public!r}, secret='<hidden>')"


def curve_wanted(exp, has_real_hosts: bool, inventory_curve: bool | None = None) -> bool:
    """Whether a run uses CURVE: an explicit `true` (experiment security.curve or the inventory's curve) wins,
    then an explicit `false`; unset in both: on exactly when the run has real hosts. Never for backend sim."""
    if exp.backend == "sim":
        return False
    said = (exp.security.curve, inventory_curve)
    if True in said:
        return True
    if False in said:
        return False
    return has_real_hosts


def check_keypair(node: str, public: str, secret: str) -> Keypair:
    """A given keypair, checked: CurveError naming the node and the field (never the key) if it is not one."""
    for field, key in (("curve_public_key", public), ("curve_secret_key", secret)):
        why = key_problem(key)
        if why:
            raise CurveError(f"curve keys: {node}: {field}: {why}")
    if public_of(secret) != public:
        raise CurveError(f"curve keys: {node}: curve_public_key: is not the public key of curve_secret_key "
                         "(zmq.curve_public gives another)")
    return Keypair(public, secret)


def run_keys(nodes: Iterable[str], given: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Keypair]:
    """A keypair per node: the given one (checked), else a new one drawn for this run."""
    given = dict(given or {})
    out = {}
    for node in nodes:
        if node in given:
            if not (isinstance(given[node], (tuple, list)) and len(given[node]) == 2):
                raise CurveError(f"curve keys: {node}: expected (public, secret) Z85 keys")
            out[node] = check_keypair(node, *given[node])
        else:
            public, secret = zmq.curve_keypair()
            out[node] = Keypair(public.decode("ascii"), secret.decode("ascii"))
    return out


def given_keys(inventory) -> dict[str, tuple[str, str]]:
    """The keypairs an inventory gives (testbed/run/inventory.py: hosts.<host>.curve_public_key/_secret_key)."""
    if inventory is None:
        return {}
    return {name: (h.curve_public_key, h.curve_secret_key) for name, h in inventory.hosts.items()
            if getattr(h, "curve_public_key", None) is not None}


class RunCurve:
    """The keys of one run, and the node configs' `curve` blocks built from them."""

    def __init__(self, verifiers: Iterable[str], drafters: Iterable[str],
                 given: Mapping[str, tuple[str, str]] | None = None):
        self.verifiers, self.drafters = list(verifiers), list(drafters)
        self.given = sorted(set(given or {}) & set(self.verifiers + self.drafters))
        self.keys = run_keys(dict.fromkeys(self.verifiers + self.drafters), given)

    def verifier(self, config: VerifierConfig, host: str) -> VerifierConfig:
        """The verifier on `host` as a CURVE server accepting this run's drafters."""
        k = self.keys[host]
        return config.model_copy(update={"curve": VerifierCurve(
            public_key=k.public, secret_key=k.secret, clients=[self.keys[d].public for d in self.drafters])})

    def drafter(self, config: DrafterConfig, verifier_hosts: list[str]) -> DrafterConfig:
        """Drafter `config.name` as a CURVE client of the verifiers on `verifier_hosts` (config.connect's order).
        One verifier host per endpoint (DrafterConfig checks the same on a config file)."""
        if len(verifier_hosts) != len(config.connect):
            raise CurveError(f"curve keys: {config.name}: {len(verifier_hosts)} verifier hosts for "
                             f"{len(config.connect)} endpoints")
        k = self.keys[config.name]
        return config.model_copy(update={"curve": DrafterCurve(
            public_key=k.public, secret_key=k.secret, server_keys=[self.keys[v].public for v in verifier_hosts])})

    def manifest(self) -> dict:
        """What the manifest keeps: that CURVE was on, each node's public key, whose keys were given. No secret."""
        return {"curve": True, "public_keys": {n: k.public for n, k in self.keys.items()},
                "given_keys": self.given, "clients_plain": "users' clients (clients:) reach their drafter in plain "
                                                           "TCP: they are emulated hosts"}


def for_run(exp, inventory=None, manifest: dict | None = None) -> RunCurve | None:
    """This run's keys when it uses CURVE (curve_wanted), else None; either way `manifest["security"]` says so."""
    inv_curve = getattr(inventory, "curve", None) if inventory is not None else None
    on = curve_wanted(exp, inventory is not None, inv_curve)
    keys = RunCurve(exp.verifier_nodes(), exp.drafter_nodes(), given_keys(inventory)) if on else None
    if manifest is not None:
        if keys is not None:
            manifest["security"] = keys.manifest()
        elif exp.backend == "sim" and exp.security.curve:
            manifest["security"] = {"curve": False, "why": "backend sim: nothing crosses a real socket, so "
                                                          "security.curve is ignored"}
        else:
            manifest["security"] = {"curve": False}
    return keys

"""Joining a Ray cluster: `--cluster ray` (this machine's cluster) or `--cluster ray://HOST:PORT` (Ray Client).

One place that turns the option into `ray.init`, so sweeps on a cluster (testbed/cluster) and nodes on real
hosts (testbed/run/realhosts.py) fail the same way: a ClusterError of one line, before anything starts. Ray is
imported only here and only when a cluster is asked for: without one, Ray need not be installed.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

CONNECT_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parent.parent.parent
# What the job's runtime_env does not ship to the workers: results, environments, caches. Ray also leaves out
# what .gitignore names. Workers then run this very code (and its experiment files) with their own Python.
EXCLUDES = ["results/", ".venv/", ".git/", "**/__pycache__/", ".pytest_cache/", "*.egg-info/", ".cache/"]


def project_env() -> dict:
    """Ray's runtime_env that ships this project to every worker of the job (only at ray.init, Ray's rule)."""
    return {"working_dir": str(REPO), "excludes": EXCLUDES}
# `ray start --head` leaves the address of the cluster this machine belongs to here (Ray's own convention)
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


class ClusterError(Exception):
    """A cluster that cannot be used: one line for the user, exit 2."""


def parse(option: str) -> str:
    """`ray` → "auto"; `ray://HOST:PORT` → itself. Anything else is refused with the accepted forms."""
    if option == "ray":
        return "auto"
    if option.startswith("ray://"):
        host, _, port = option[len("ray://"):].rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return option
    raise ClusterError(f"--cluster {option!r}: expected `ray` (the Ray cluster this machine belongs to: "
                       f"RAY_ADDRESS or `ray start`) or `ray://HOST:PORT` (a head's Ray Client port, 10001 by default)")


def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def _auto_address() -> str:
    """The GCS address `ray.init(address="auto")` would join, found the way Ray finds it."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address:
        try:
            address = CURRENT_CLUSTER.read_text().strip()
        except OSError:
            raise ClusterError("--cluster ray: no Ray cluster here (RAY_ADDRESS is unset and `ray start --head` has "
                               "not been run on this machine); start one, or give --cluster ray://HOST:PORT") from None
    return address


def check(option: str) -> str:
    """The address to give ray.init, after a TCP connect to it proves something listens there (an unreachable
    head would otherwise keep ray.init retrying for minutes)."""
    address = parse(option)
    if address == "auto":
        address = _auto_address()
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--cluster {option}: cluster address {address!r} is not HOST:PORT")
    why = _reachable(host, int(port))
    if why:
        raise ClusterError(f"--cluster {option}: Ray cluster at {host}:{port} unreachable ({why}) "
                           f"within {CONNECT_TIMEOUT_S:.0f} s")
    return address


def connect(option: str, **init_kw) -> str:
    """Joins the cluster (once per process; a second call is a no-op) and returns its address."""
    address = check(option)
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install 'specnet[cluster]' (make setup installs it)") from None
    if ray.is_initialized():
        return address
    # EXCLUDES already leaves out .git and .venv; with Ray's own defaults too it warns about them on every run
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False,
                 **{"runtime_env": project_env(), **init_kw})
    except Exception as e:          # Ray raises ConnectionError, RuntimeError or its own: all mean "cannot join"
        raise ClusterError(f"--cluster {option}: joining the Ray cluster at {address} failed: "
                           f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
    return address


def resources() -> dict[str, float]:
    """What the joined cluster's live nodes advertise in all (CPU, specnet_root, a real host's label, ...)."""
    import ray
    return dict(ray.cluster_resources())


def nodes_with(resource: str) -> list[dict]:
    """The live nodes that advertise `resource` (each as ray.nodes() gives it)."""
    import ray
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(resource, 0) > 0]

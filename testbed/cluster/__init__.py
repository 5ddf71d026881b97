"""Sweeps and paper reproductions on a Ray cluster (`testbed run EXP --cluster ray[://ADDR]`,
`testbed reproduce PAPER --cluster ray[://ADDR]`).

Each point is one Ray task (task.py) that runs `testbed run FILE --set ... --point N` as a child on whichever
worker Ray picks (sim and local points: any worker with a free CPU; mininet points: only workers advertising the
`specnet_root` resource, one at a time each), then ships the point's run directory back as a tarball. The driver
(sweep.py) unpacks it into its own results/, writes RUN/cluster.json (which node ran it, after how many tries),
retries a point whose worker was lost once, and reports the rest as failed with the reason. Ray is imported only
here and in testbed/common/raycluster.py, and only with --cluster.
"""

"""Capability probes and the delay-backend choice (assertions follow the probes, not the host)."""
import os
import time

import pytest

from testbed.net import capabilities as caps
from testbed.net.capabilities import (USES, BACKEND_ENV, Capability, CapabilityError, choose_delay_backend,
                                  format_table, probe_all, probe_netem, probe_nfqueue)

NAMES = ['root', 'mininet', 'bridge', 'tc', 'netem', 'nfqueue', 'iptables', 'ethtool', 'chrt', 'gpu', 'torch']


@pytest.fixture(autouse=True)
def no_backend_env(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def test_probe_all_names_every_capability():
    found = probe_all()
    assert [c.name for c in found] == NAMES
    for c in found:
        assert isinstance(c, Capability) and isinstance(c.ok, bool) and c.detail


def test_root_probe_matches_euid():
    root = {c.name: c for c in probe_all()}['root']
    assert root.ok == (os.geteuid() == 0)


def test_auto_picks_netem_iff_netem_works():
    if os.geteuid() != 0:
        with pytest.raises(CapabilityError, match='needs root'):
            choose_delay_backend()
        return
    backend, reason = choose_delay_backend()
    netem = probe_netem()
    assert backend == ('netem' if netem.ok else 'nfqueue')
    if not netem.ok:
        assert probe_nfqueue().ok
        assert reason == 'netem: %s' % netem.detail
    assert choose_delay_backend('auto') == (backend, reason)


def test_forcing_missing_netem_raises():
    if probe_netem().ok:
        pytest.skip('netem works on this machine')
    with pytest.raises(CapabilityError, match='netem'):
        choose_delay_backend('netem')


def test_env_forces_backend_and_argument_wins(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'nfqueue')
    if probe_nfqueue().ok:
        assert choose_delay_backend() == ('nfqueue', 'forced by $%s' % BACKEND_ENV)
    else:
        with pytest.raises(CapabilityError, match=BACKEND_ENV):
            choose_delay_backend()
    if not probe_netem().ok:
        with pytest.raises(CapabilityError, match='netem'):
            choose_delay_backend('netem')  # the explicit argument beats the variable
    monkeypatch.setenv(BACKEND_ENV, 'tbf')
    with pytest.raises(ValueError, match='tbf'):
        choose_delay_backend()


def test_probes_report_needs_root_when_not_root(monkeypatch):
    monkeypatch.setattr(caps.os, 'geteuid', lambda: 1000)
    probe_netem.cache_clear()
    probe_nfqueue.cache_clear()
    try:
        assert probe_netem() == Capability('netem', False, 'needs root')
        assert probe_nfqueue() == Capability('nfqueue', False, 'needs root')
        found = {c.name: c for c in probe_all()}
        assert not found['root'].ok and not found['iptables'].ok
        assert 'needs root' in found['iptables'].detail or 'not found' in found['iptables'].detail
    finally:
        probe_netem.cache_clear()
        probe_nfqueue.cache_clear()


def test_kernel_probes_are_quick_and_cached():
    probe_netem.cache_clear()
    probe_nfqueue.cache_clear()
    for probe in (probe_netem, probe_nfqueue):
        t0 = time.monotonic()
        first = probe()
        assert time.monotonic() - t0 < 3.0
        assert probe() is first


def test_format_table_lists_every_capability():
    found = probe_all()
    text = format_table(found, 'nfqueue', 'netem: Specified qdisc kind is unknown')
    lines = text.splitlines()
    assert len(lines) == len(found) + 2
    status_col, use_col = lines[0].index('status'), lines[0].index('used for')
    detail_col = lines[0].index('detail')
    for c, line in zip(found, lines[1:]):  # aligned: every row's columns start at the header's
        assert line[:status_col].rstrip() == c.name
        assert line[status_col:use_col].rstrip() == ('ok' if c.ok else 'MISSING')
        use, without = USES[c.name]      # what it gives when present, what happens when missing
        assert line[use_col:detail_col].rstrip() == (use if c.ok else without)
        assert line[detail_col:] == c.detail
    assert lines[-1] == 'delay backend: nfqueue (netem: Specified qdisc kind is unknown)'
    assert format_table([], None, 'no backend').endswith('delay backend: none (no backend)')

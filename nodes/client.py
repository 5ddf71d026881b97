"""A user's client: a ZeroMQ DEALER to the drafter that serves it, around the client core (nodes/core/client.py).

    python -m nodes.client --config RUN/nodes/u1.json        # as the runner starts it, on a `role: user` host

It uploads each request's prompt at the request's time (ASK) and waits for the answers (ANSWER); its event log has
an `ask` and an `answer` per request (the latency), its output file a JSON line per answer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from nodes import protocol as P
from nodes.config import ClientConfig
from nodes.core.client import ClientCore, ClientError
from nodes.events import Connect, EventLog
from nodes.shell import Shell, crashed, exit_on_sigterm, node_config, wait_at_gate


class ClientShell(Shell):
    def __init__(self, config: ClientConfig, texts: list[str], log: EventLog):
        super().__init__(ClientCore(config, texts), None, log)
        self.config = config
        self.results: list[dict] = []
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, config.name.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME)

    def connect(self) -> None:
        """Connect, and return once the drafter has accepted the connection (ZMTP handshake done): a request sent
        before that would wait for ZeroMQ's next reconnect attempt (100 ms), which no upload time should include."""
        from zmq.utils.monitor import recv_monitor_message
        monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.connect(self.config.connect)
        try:
            if not monitor.poll(int(self.config.timeout_s * 1e3)):
                raise ClientError(f"could not connect to the drafter at {self.config.connect} within "
                                  f"{self.config.timeout_s:g} s")
            recv_monitor_message(monitor)
        finally:
            self.sock.disable_monitor()
            monitor.close(0)
        self.record(Connect(t=time.time(), node=self.config.name, endpoint=self.config.connect,
                            requests=len(self.config.requests)))     # unbuffered: the runner sees it now

    def run(self) -> list[dict]:
        core = self.core
        wake, _ = self.execute(core.begin(time.time()))
        while not core.done:
            timeout = None if wake is None or wake == float("inf") else max(0.0, wake - time.time())
            frames = []
            if self.sock.poll(None if timeout is None else int(timeout * 1e3)):
                while True:
                    try:
                        frames.append(("drafter", self.sock.recv(zmq.NOBLOCK)))
                    except zmq.Again:
                        break
            actions = core.on_frames(frames, time.time()) if frames else core.on_timer(time.time())
            wake, _ = self.execute(actions)
        return self.results

    def send(self, to, frame: bytes) -> None:
        self.sock.send(frame)

    def output(self, result: dict) -> None:
        self.results.append(result)


def prompt_texts(source: str) -> list[str]:
    from nodes.workloads.datasets import DatasetError, load_prompt_set
    try:
        return [p.text for p in load_prompt_set(source)]
    except DatasetError as e:
        raise ClientError(str(e)) from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.client", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, metavar="FILE", help="a ClientConfig as JSON (RUN/nodes/<user>.json)")
    args = ap.parse_args(argv)
    exit_on_sigterm(143)
    config = node_config(ClientConfig, args, None)
    log = EventLog(config.log, config.name)
    try:
        shell = ClientShell(config, prompt_texts(config.prompts), log)
        shell.connect()
        wait_at_gate(config.start_gate)          # starts with the drafters
        results = shell.run()
    except (ClientError, P.ProtocolError) as e:
        return crashed(log, config.name, str(e))
    finally:
        log.close()
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if config.out:
        with open(config.out, "w") as f:
            f.write(lines)
    else:
        sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

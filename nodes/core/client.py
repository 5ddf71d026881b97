"""A user's client as a state machine (Zhu et al.'s users): it uploads each request's prompt to the drafter that
serves it at the request's time, and waits for the answers.

    core = ClientCore(config, texts)
    actions = core.begin(now)
    ... core.on_frames([(drafter, frame), ...], now) | core.on_timer(now)
    until core.done

The upload is the prompt as text, `chars_per_token` characters per prompt token (a text cut or repeated from the
prompt set), so its size on the wire (what the user's share of the wireless band carries) follows the prompt's
length; the drafter encodes it and cuts or repeats the ids to exactly `prompt_tokens`. A request's latency is
from its ASK's sending to its ANSWER's arrival, on the client's clock.
"""
from __future__ import annotations

from nodes import events as E
from nodes import protocol as P
from nodes.config import ClientConfig
from nodes.core.actions import Action, Output, Record, Send, WakeAt

DRAFTER = "drafter"           # the one peer a client sends to (its shell knows where that is)


class ClientError(RuntimeError):
    pass


def prompt_text(texts: list[str], index: int, chars: int) -> str:
    """`chars` characters of prompt `index` (of the set, cyclically), repeated if it is shorter."""
    text = texts[index % len(texts)] or " "
    return (text + " ") * (chars // (len(text) + 1) + 1) if len(text) < chars else text


class ClientCore:
    def __init__(self, config: ClientConfig, texts: list[str]):
        if not texts:
            raise ClientError("no prompt texts to upload")
        self.config, self.texts, self.name = config, texts, config.name
        self.pending = sorted(config.requests, key=lambda r: (r.at_s, r.request))
        self.asked: dict[str, float] = {}        # request -> when its ASK went out
        self.answered = 0
        self.t0 = self.last_activity = 0.0
        self.done = False

    def begin(self, now: float) -> list[Action]:
        self.t0 = self.last_activity = now
        return self._run(now)

    def on_frames(self, frames: list[tuple[str, bytes]], now: float) -> list[Action]:
        out: list[Action] = []
        for _, frame in frames:
            msg = P.decode(frame)
            if isinstance(msg, P.Error):
                raise ClientError(f"the drafter refused: {msg.code}: {msg.message}")
            if not isinstance(msg, P.Answer) or msg.request not in self.asked:
                raise ClientError(f"expected ANSWER to one of this client's requests, got {P.describe(msg)[:200]}")
            asked = self.asked.pop(msg.request)
            self.answered += 1
            self.last_activity = now
            out += [Record(E.Answer(t=now, node=self.name, request=msg.request, tokens=len(msg.tokens),
                                    latency_s=now - asked, bytes_in=len(frame))),
                    Output({"client": self.name, "request": msg.request, "asked_s": asked - self.t0,
                            "latency_s": now - asked, "tokens": msg.tokens.tolist(),
                            "text": msg.text.decode("utf-8")})]
        return out + self._run(now)

    def on_timer(self, now: float) -> list[Action]:
        if self.asked and now - self.last_activity >= self.config.timeout_s:
            raise ClientError(f"no answer for {self.config.timeout_s:g} s ({len(self.asked)} request(s) waiting)")
        return self._run(now)

    def _run(self, now: float) -> list[Action]:
        out: list[Action] = []
        c = self.config
        while self.pending and self.t0 + self.pending[0].at_s <= now:
            r = self.pending.pop(0)
            index = c.prompt_offset + len(self.asked) + self.answered
            text = prompt_text(self.texts, index, r.prompt_tokens * c.chars_per_token)
            prompt = text[:r.prompt_tokens * c.chars_per_token].encode("utf-8")[:P.MAX_TEXT]
            frame = P.encode(P.Ask(r.request, prompt, r.prompt_tokens, r.max_new, now))
            self.asked[r.request] = now
            if len(self.asked) == 1:
                self.last_activity = now        # the answer timeout runs from the first request waiting
            out += [Send(DRAFTER, frame),
                    Record(E.Ask(t=now, node=self.name, request=r.request, prompt_tokens=r.prompt_tokens,
                                 max_new=r.max_new, bytes=len(frame)))]
        if not self.pending and not self.asked:
            self.done = True
            return out + [Record(E.Done(t=now, node=self.name, sessions=self.answered))]
        wake = self.last_activity + c.timeout_s if self.asked else float("inf")
        if self.pending:
            wake = min(wake, self.t0 + self.pending[0].at_s)
        return out + [WakeAt(wake)]

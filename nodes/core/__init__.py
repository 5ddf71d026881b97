"""The drafter and verifier as I/O-free state machines, driven alike by the ZeroMQ shells (nodes/drafter.py,
nodes/verifier.py), a simulator and tests.

A core never touches a socket, a clock, a sleep or a file. It is fed inputs, each with the current time `now`
(seconds on whatever clock its driver keeps): a frame arrived, a compute finished, a timer fired; and it
answers with actions (nodes/core/actions.py): send this frame, run this compute, wake me at t, record this
event, this session's output is ready. Compute is described, not done: the driver runs a `DraftWork` or
`VerifyWork` on the backend (the ZeroMQ shells for real, paced to a profile for the synthetic backend; a
simulator by the profile's duration) and reports back with its result and how long it took.
"""

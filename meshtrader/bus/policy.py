"""The bus's back-pressure policy in one place: high-water marks and how much one socket may drain
before the others get a turn."""
from __future__ import annotations

import zmq

DRAIN_LIMIT = 1000  # messages taken from one socket before giving the others a turn
HWM = 100_000  # messages queued per peer before ZeroMQ drops (PUB) or blocks (REQ)

# ZeroMQ's flags as plain ints: pyzmq's enum flags cost an enum operation at every send and receive.
NOBLOCK, SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)
EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)

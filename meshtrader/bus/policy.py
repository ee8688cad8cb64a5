"""The bus's back-pressure policy in one place: each socket kind's high-water marks, and how much one
socket may drain before the others get a turn. README "The wire" states what happens at each mark.

A ZeroMQ PUB never blocks: at a subscriber's SNDHWM + RCVHWM it drops that subscriber's messages (and
only that subscriber's), so a stalled subscriber slows neither the feed nor the executor. Those drops
are silent in ZeroMQ; the subscriber sees them as sequence gaps (`mesh_sequence_gaps_total`) at the
next message of the topic it reads."""
from __future__ import annotations

import zmq

DRAIN_LIMIT = 1000  # messages taken from one socket before giving the others a turn
DRAIN_BUDGET_S = 0.05  # ... or seconds of handling them (slow handlers: a live order waits on the exchange)

# Streams (PUB/SUB): deep enough to ride out a subscriber's GC pause or a burst of a few seconds of replay,
# bounded so a stalled subscriber costs its publisher at most PUB_SNDHWM queued frames (~100 B to a few KB).
PUB_SNDHWM = 100_000  # per subscriber; past it, that subscriber's messages are dropped
SUB_RCVHWM = 100_000  # per publisher the subscriber connects to

# Request/reply: a REQ has one request in flight, so a REP holds at most one per client; the marks only
# bound a flood of clients. REQ never queues more than one request either (Lazy Pirate resets on silence).
REQ_REP_HWM = 1_000

# The inproc PUSH from an AsyncioThread to its service, ZeroMQ's default: at this mark the thread blocks (PUSH
# does not drop), which holds back a websocket stream, never the service loop, and loses nothing.
INBOX_HWM = 1_000

# ZeroMQ's flags as plain ints: pyzmq's enum flags cost an enum operation at every send and receive.
NOBLOCK, SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)
POLLIN = int(zmq.POLLIN)
SNDHWM, RCVHWM = int(zmq.SNDHWM), int(zmq.RCVHWM)
